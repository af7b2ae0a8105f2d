package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/train/data"
)

func open(t *testing.T, o Options) *Reviewer {
	t.Helper()
	r, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func rowOf(t *testing.T, r *Reviewer, line int) Row {
	t.Helper()
	for _, row := range r.Rows() {
		if row.Line == line {
			return row
		}
	}
	t.Fatalf("no row for line %d", line)
	return Row{}
}

func TestIndexFields(t *testing.T) {
	r := open(t, Options{Scored: writeScored(t, t.TempDir())})
	in := r.Info()
	if in.Examples != fixtureLines {
		t.Fatalf("examples %d, want %d", in.Examples, fixtureLines)
	}
	want := map[string]bool{"ifd": true, "ppl": true, "labels.educational": true, "cluster": true, "total_tokens": true}
	for _, f := range in.Fields {
		delete(want, f)
		if f == "line" || f == "embedding_model" || f == "format" {
			t.Errorf("field %q is not a numeric score", f)
		}
	}
	if len(want) > 0 {
		t.Errorf("fields %v missing from %v", want, in.Fields)
	}
	bad := rowOf(t, r, 7)
	if bad.Error == "" {
		t.Errorf("line 7 should carry its score error")
	}
	row := rowOf(t, r, 2)
	if row.Prompt != "Weather in city 2?" || row.Answer != "It is sunny in city 2." || len(row.Flags) != 1 || row.Flags[0] != "tools" {
		t.Errorf("row 2 previews %+v", row)
	}
	ifd := -1
	for i, f := range in.Fields {
		if f == "ifd" {
			ifd = i
		}
	}
	if got := float64(*row.Scores[ifd]); got != 1.7 {
		t.Errorf("row 2 ifd %v, want 1.7", got)
	}
}

func TestNumericFieldsNestedAndArrays(t *testing.T) {
	got, err := numericFields(json.RawMessage(`{"line":3,"a":1.5,"emb":[1,[2,{"x":3}],4],"labels":{"x":0.25,"deep":{"y":2}},"s":"t","ok":true,"z":-1e3}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []numField{{"a", 1.5}, {"labels.x", 0.25}, {"labels.deep.y", 2}, {"z", -1000}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestDecideSurvivesReopen: keep, drop, edit, revert and undecided all come back from the review file.
func TestDecideSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	scored := writeScored(t, dir)
	r, err := Open(Options{Scored: scored})
	if err != nil {
		t.Fatal(err)
	}
	h := func(line int) string { return rowOf(t, r, line).Hash }
	edit := json.RawMessage(`{"prompt":"Question 4: what is 4 plus 4?","response":"Eight."}`)
	_, err = r.Decide([]Change{
		{Line: 1, Hash: h(1), Decision: data.DecisionKeep},
		{Line: 2, Hash: h(2), Decision: data.DecisionDrop},
		{Line: 4, Hash: h(4), Decision: data.DecisionKeep, Edit: edit},
		{Line: 5, Hash: h(5), Decision: data.DecisionDrop},
		{Line: 5, Hash: h(5), Decision: data.DecisionUndecided},
		{Line: 8, Hash: h(8), Decision: data.DecisionKeep, Edit: edit},
		{Line: 8, Hash: h(8), RevertEdit: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.Example(4)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Chat) != 2 || d.Chat[1].Content != "Eight." || d.Original == nil {
		t.Errorf("line 4 shows %+v, want the edit", d.Chat)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := open(t, Options{Scored: scored})
	want := map[int]string{1: "keep", 2: "drop", 4: "keep", 5: "undecided", 8: "keep", 3: "undecided"}
	for line, dec := range want {
		if got := rowOf(t, r2, line); got.Decision != dec {
			t.Errorf("line %d after reopening: %s, want %s", line, got.Decision, dec)
		}
	}
	if got := rowOf(t, r2, 4).Answer; got != "Eight." {
		t.Errorf("line 4's preview %q, want the edit's", got)
	}
	if !rowOf(t, r2, 4).Edited || rowOf(t, r2, 8).Edited {
		t.Errorf("edited flags: line 4 %v (want true), line 8 %v (want false)", rowOf(t, r2, 4).Edited, rowOf(t, r2, 8).Edited)
	}
	in := r2.Info()
	if in.Kept != 3 || in.Dropped != 1 || in.Edited != 1 {
		t.Errorf("info %+v", in)
	}
}

func TestDecideRefusesBadChanges(t *testing.T) {
	dir := t.TempDir()
	r := open(t, Options{Scored: writeScored(t, dir)})
	h1 := rowOf(t, r, 1).Hash
	for name, c := range map[string]Change{
		"wrong hash":       {Line: 1, Hash: "00", Decision: "keep"},
		"no such line":     {Line: 999, Hash: h1, Decision: "keep"},
		"bad decision":     {Line: 1, Hash: h1, Decision: "maybe"},
		"edit not example": {Line: 1, Hash: h1, Edit: json.RawMessage(`{"prompt":"p"}`)},
		"edit with score":  {Line: 1, Hash: h1, Edit: json.RawMessage(`{"score":{},"prompt":"p","response":"r"}`)},
		"edit not object":  {Line: 1, Hash: h1, Edit: json.RawMessage(`[1]`)},
	} {
		// a good change in the same batch is not applied either
		_, err := r.Decide([]Change{{Line: 3, Hash: rowOf(t, r, 3).Hash, Decision: "drop"}, c})
		if !errors.Is(err, ErrBadChange) {
			t.Errorf("%s: err %v, want a bad change", name, err)
		}
	}
	if got := rowOf(t, r, 3).Decision; got != "undecided" {
		t.Errorf("a batch with a bad change was partly applied: line 3 is %s", got)
	}
	st, err := data.ReadReview(data.ReviewPath(filepath.Join(dir, "scored.jsonl")))
	if err != nil || st.Count != 0 {
		t.Fatalf("review file holds %v records (err %v), want none", st, err)
	}
}

// TestTornRecordCut: a crash mid-append leaves a record without its newline; Open cuts it off and keeps the rest.
func TestTornRecordCut(t *testing.T) {
	dir := t.TempDir()
	scored := writeScored(t, dir)
	r := open(t, Options{Scored: scored})
	if _, err := r.Decide([]Change{{Line: 1, Hash: rowOf(t, r, 1).Hash, Decision: "drop"}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	rp := data.ReviewPath(scored)
	f, err := os.OpenFile(rp, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"line":2,"hash":"ab`)
	f.Close()
	st, err := data.ReadReview(rp)
	if err != nil || !st.Torn || st.Count != 1 {
		t.Fatalf("ReadReview of a torn file: %+v %v", st, err)
	}
	r2 := open(t, Options{Scored: scored})
	if !r2.Info().Repaired || rowOf(t, r2, 1).Decision != "drop" {
		t.Fatalf("reopened: repaired %v, line 1 %s", r2.Info().Repaired, rowOf(t, r2, 1).Decision)
	}
	if _, err := r2.Decide([]Change{{Line: 2, Hash: rowOf(t, r2, 2).Hash, Decision: "keep"}}); err != nil {
		t.Fatal(err)
	}
	st, err = data.ReadReview(rp)
	if err != nil || st.Torn || st.Count != 2 {
		t.Fatalf("after the repair and one more decision: %+v %v", st, err)
	}
	// a bad line in the middle is not a torn tail: an error naming it
	os.WriteFile(rp, []byte("{\"line\":1}\n{}\n"), 0o644)
	if _, err := data.ReadReview(rp); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("a bad record: err %v, want one naming line 1", err)
	}
}

// TestStaleDecision: a decision made on an example that has since changed is reported, not applied.
func TestStaleDecision(t *testing.T) {
	dir := t.TempDir()
	scored := writeScored(t, dir)
	r := open(t, Options{Scored: scored})
	if _, err := r.Decide([]Change{{Line: 3, Hash: rowOf(t, r, 3).Hash, Decision: "drop"},
		{Line: 4, Hash: rowOf(t, r, 4).Hash, Decision: "keep"}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	b, _ := os.ReadFile(scored)
	b = bytes.Replace(b, []byte("Bonjour 3"), []byte("Bonjour trois"), 1)
	os.WriteFile(scored, b, 0o644)
	r2 := open(t, Options{Scored: scored})
	in := r2.Info()
	if len(in.StaleLines) != 1 || in.StaleLines[0] != 3 {
		t.Fatalf("stale lines %v, want [3]", in.StaleLines)
	}
	if row := rowOf(t, r2, 3); !row.Stale || row.Decision != "undecided" {
		t.Errorf("line 3: %+v, want stale and undecided", row)
	}
	if rowOf(t, r2, 4).Decision != "keep" {
		t.Errorf("line 4 lost its decision")
	}
	// undecided again is enough to settle it: a new record with the new hash
	if _, err := r2.Decide([]Change{{Line: 3, Hash: rowOf(t, r2, 3).Hash, Decision: "undecided"}}); err != nil {
		t.Fatal(err)
	}
	if len(r2.Info().StaleLines) != 0 {
		t.Errorf("still stale after a new decision")
	}
}

func TestTemplateSegments(t *testing.T) {
	got := segments("abcdefgh", [][2]int{{2, 4}, {6, 8}})
	want := []Segment{{"ab", false}, {"cd", true}, {"ef", false}, {"gh", true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestSearch(t *testing.T) {
	r := open(t, Options{Scored: writeScored(t, t.TempDir())})
	lines, err := r.Search("SUNNY in city 1")
	if err != nil {
		t.Fatal(err)
	}
	// city 1x: lines 10, 14, 18 (messages lines are n%4==2)
	if fmt.Sprint(lines) != "[10 14 18]" {
		t.Errorf("search: %v", lines)
	}
	if lines, _ := r.Search("step by step about 5.\nit"); fmt.Sprint(lines) != "[5]" {
		t.Errorf("search across an escaped newline: %v", lines)
	}
}

func do(t *testing.T, h http.Handler, method, target, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Host = "127.0.0.1:8090"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

func TestHTTPToken(t *testing.T) {
	r := open(t, Options{Scored: writeScored(t, t.TempDir()), Token: "s3cret"})
	h := r.Handler()
	for _, c := range []struct {
		name   string
		target string
		hdr    map[string]string
		code   int
	}{
		{"no token", "/api/info", nil, 401},
		{"wrong token", "/api/info", map[string]string{"X-Lorakit-Token": "s3cres"}, 401},
		{"prefix of the token", "/api/info", map[string]string{"X-Lorakit-Token": "s3c"}, 401},
		{"header", "/api/info", map[string]string{"X-Lorakit-Token": "s3cret"}, 200},
		{"bearer", "/api/rows", map[string]string{"Authorization": "Bearer s3cret"}, 200},
		{"query", "/api/examples/2?token=s3cret", nil, 200},
		{"page needs none", "/", nil, 200},
		{"script needs none", "/app.js", nil, 200},
	} {
		if code, body := do(t, h, "GET", c.target, "", c.hdr); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	code, _ := do(t, h, "POST", "/api/decisions", `{"changes":[]}`, map[string]string{"Content-Type": "application/json"})
	if code != 401 {
		t.Errorf("POST without the token: %d", code)
	}
}

func TestHTTPGuards(t *testing.T) {
	r := open(t, Options{Scored: writeScored(t, t.TempDir())})
	h := r.Handler()
	tok := map[string]string{"Content-Type": "application/json"}
	req := httptest.NewRequest("GET", "/api/info", nil)
	req.Host = "attacker.example:8090" // DNS rebinding: another name pointing at 127.0.0.1
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %d", w.Code)
	}
	if code, _ := do(t, h, "POST", "/api/decisions", `{"changes":[]}`, map[string]string{"Content-Type": "text/plain"}); code != 415 {
		t.Errorf("text/plain POST: %d, want 415", code)
	}
	if code, _ := do(t, h, "POST", "/api/decisions", `{"changes":[{"line":1,"hash":"x","decision":"keep"}]}`, tok); code != 400 {
		t.Errorf("wrong hash: %d, want 400", code)
	}
	if code, _ := do(t, h, "POST", "/api/decisions", `{"changes":`, tok); code != 400 {
		t.Errorf("bad JSON: %d, want 400", code)
	}
	if code, _ := do(t, h, "GET", "/api/examples/9999", "", nil); code != 404 {
		t.Errorf("no such line: %d, want 404", code)
	}
	if code, _ := do(t, h, "GET", "/api/examples/x", "", nil); code != 400 {
		t.Errorf("line x: %d, want 400", code)
	}
	for _, host := range []string{"localhost:8090", "[::1]:8090", "127.0.0.1"} {
		req := httptest.NewRequest("GET", "/api/info", nil)
		req.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			t.Errorf("Host %s: %d", host, w.Code)
		}
	}
}

// TestConcurrentSaves: many clients deciding at once (run under -race); the file ends up saying exactly
// what the server says, and every record in it is whole.
func TestConcurrentSaves(t *testing.T) {
	dir := t.TempDir()
	scored := writeScored(t, dir)
	r := open(t, Options{Scored: scored, Token: "t"})
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	rows := r.Rows()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < 40; i++ {
				var changes []Change
				for k := 0; k < 1+rng.Intn(4); k++ {
					row := rows[rng.Intn(len(rows))]
					c := Change{Line: row.Line, Hash: row.Hash, Decision: []string{"keep", "drop", "undecided"}[rng.Intn(3)]}
					if row.Line%4 == 0 && rng.Intn(3) == 0 {
						c.Edit = json.RawMessage(fmt.Sprintf(`{"prompt":"p%d","response":"edited by %d"}`, row.Line, g))
					}
					changes = append(changes, c)
				}
				body, _ := json.Marshal(map[string]any{"changes": changes})
				req, _ := http.NewRequest("POST", srv.URL+"/api/decisions", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Lorakit-Token", "t")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", res.StatusCode)
					return
				}
				if i%10 == 0 { // readers at the same time
					if _, err := http.Get(srv.URL + "/api/rows?token=t"); err != nil {
						errs <- err
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st, err := data.ReadReview(data.ReviewPath(scored))
	if err != nil || st.Torn {
		t.Fatalf("review file: %v torn=%v", err, st != nil && st.Torn)
	}
	for _, row := range r.Rows() {
		rec, ok := st.Records[row.Line]
		dec, edited := data.DecisionUndecided, false
		if ok {
			dec, edited = rec.Decision, rec.Edit != nil
		}
		if dec != row.Decision || edited != row.Edited {
			t.Errorf("line %d: file says %s (edited %v), server says %s (edited %v)", row.Line, dec, edited, row.Decision, row.Edited)
		}
	}
}

// TestSecondReviewRefused: the review file is locked while a review runs.
func TestSecondReviewRefused(t *testing.T) {
	scored := writeScored(t, t.TempDir())
	open(t, Options{Scored: scored})
	if _, err := Open(Options{Scored: scored}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second review of the same file: %v", err)
	}
}

// TestOtherShapes: plain text and ShareGPT lines show as a document and as a chat.
func TestOtherShapes(t *testing.T) {
	dir := t.TempDir()
	scored := filepath.Join(dir, "s.jsonl")
	os.WriteFile(scored, []byte(`{"score":{"line":1,"ppl":3},"text":"Once upon a time."}
{"score":{"line":2,"ppl":4},"conversations":[{"from":"human","value":"1+1?"},{"from":"gpt","value":"2"}]}
`), 0o644)
	r := open(t, Options{Scored: scored})
	if row := rowOf(t, r, 1); row.Prompt != "Once upon a time." {
		t.Errorf("text row %+v", row)
	}
	d, err := r.Example(1)
	if err != nil || len(d.Chat) != 1 || d.Chat[0].Role != "text" || d.Chat[0].Content != "Once upon a time." {
		t.Fatalf("text example %+v %v", d, err)
	}
	d, err = r.Example(2)
	if err != nil || len(d.Chat) != 2 || d.Chat[0].Role != "user" || d.Chat[1].Content != "2" {
		t.Fatalf("ShareGPT example %+v %v", d, err)
	}
	// an edit in the same shape is accepted
	if _, err := r.Decide([]Change{{Line: 2, Hash: d.Hash, Decision: "keep",
		Edit: json.RawMessage(`{"conversations":[{"from":"human","value":"1+1?"},{"from":"gpt","value":"two"}]}`)}}); err != nil {
		t.Fatal(err)
	}
}

// TestTemplateView: with a template, an example comes with its training text, the assistant's part marked.
func TestTemplateView(t *testing.T) {
	tpl, err := chat.New("", "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	r := open(t, Options{Scored: writeScored(t, t.TempDir()), Template: tpl})
	if !r.Info().Template {
		t.Error("info does not say a template is set")
	}
	d, err := r.Example(4)
	if err != nil {
		t.Fatal(err)
	}
	var text, loss strings.Builder
	for _, s := range d.Rendered {
		text.WriteString(s.Text)
		if s.Loss {
			loss.WriteString(s.Text)
		}
	}
	if !strings.Contains(text.String(), "Question 4: what is 4 plus 4?") || loss.String() != "The answer to question 4 is 8.</s>" {
		t.Fatalf("rendered %q, trained on %q", text.String(), loss.String())
	}
	if d.RenderError != "" {
		t.Errorf("render error %q", d.RenderError)
	}
}

// TestHTTPAnyHost: a server reachable beyond loopback (AnyHost) needs a token, answers any Host that brings
// it, and refuses the API to a request without it.
func TestHTTPAnyHost(t *testing.T) {
	scored := writeScored(t, t.TempDir())
	if r, err := Open(Options{Scored: scored, AnyHost: true}); err == nil {
		r.Close()
		t.Fatal("AnyHost without a token was accepted")
	}
	h := open(t, Options{Scored: scored, Token: "s3cret", AnyHost: true}).Handler()
	for _, c := range []struct {
		host, token string
		code        int
	}{
		{"reviewbox.lan:8090", "s3cret", 200},
		{"192.0.2.7:8090", "s3cret", 200},
		{"127.0.0.1:8090", "s3cret", 200},
		{"reviewbox.lan:8090", "", 401},
		{"192.0.2.7:8090", "wrong", 401},
	} {
		req := httptest.NewRequest("GET", "/api/info", nil)
		req.Host = c.host
		if c.token != "" {
			req.Header.Set("X-Lorakit-Token", c.token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != c.code {
			t.Errorf("Host %s, token %q: %d, want %d", c.host, c.token, w.Code, c.code)
		}
	}
}
