package review

// The review page end to end in a real headless Chromium (Debian's chromium, driven over the DevTools
// protocol by chromedp): sort, cut, keyboard decisions, an edit, a bulk drop of the filter, a reload that
// finds every decision, and data.Filter applying exactly those decisions. Skipped when chromium is absent
// locally; .ci/install/75-chromium.sh installs it and sets LORAKIT_CHROMIUM, which makes it a failure.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/lorakit/lorakit/train/data"
)

func chromiumPath(t *testing.T) string {
	if p := os.Getenv("LORAKIT_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("LORAKIT_CHROMIUM=%s: %v", p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("review page test skipped: no chromium (apt-get install -y chromium, or set LORAKIT_CHROMIUM)")
	return ""
}

// fixtureIFD is the ifd writeScored gives line n (line 7 has none).
func fixtureIFD(n int) float64 { return float64(n*37%40) / 20 }

func TestReviewPageInBrowser(t *testing.T) {
	exe := chromiumPath(t)
	shots := os.Getenv("LORAKIT_REVIEW_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
		t.Logf("screenshots in %s (set LORAKIT_REVIEW_SCREENSHOTS=DIR to keep them)", shots)
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	scored := writeScored(t, dir)
	r, err := Open(Options{Scored: scored, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()
	page := "http://" + ln.Addr().String() + "/#token=tok"

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-quic", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()

	b := &browser{t: t, ctx: ctx, shots: shots}
	b.run("load", chromedp.Navigate(page), chromedp.WaitVisible(`body[data-ready="1"]`))
	b.shot("01-loaded")
	if n := b.intJS(`document.querySelectorAll('#tbody tr').length`); n != fixtureLines {
		t.Fatalf("table shows %d rows, want %d", n, fixtureLines)
	}
	if n := b.intJS(`document.querySelectorAll('#hists .hist').length`); n < 8 {
		t.Errorf("%d histograms, want one per numeric score (labels.educational included)", n)
	}
	b.run("histogram of a nested label", chromedp.WaitVisible(`.hist[data-field="labels.educational"] svg rect`))

	// sort by ifd: the first click on a score sorts it best (highest) first; line 7 (no score) last
	b.run("sort", chromedp.Click(`th[data-sort="ifd"]`), chromedp.WaitVisible(`th.sorted[data-sort="ifd"]`))
	var all []int
	for n := 1; n <= fixtureLines; n++ {
		if n != 7 {
			all = append(all, n)
		}
	}
	byIFD := func(lines []int) []int {
		out := append([]int(nil), lines...)
		sort.Slice(out, func(i, j int) bool { return fixtureIFD(out[i]) > fixtureIFD(out[j]) })
		return out
	}
	if got, want := b.lines(), append(byIFD(all), 7); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sorted by ifd: %v\nwant %v", got, want)
	}
	b.shot("02-sorted-by-ifd")

	// cut ifd at 1 from below, typed under its histogram
	b.run("cut", chromedp.SendKeys(`input[data-cut="min"][data-field="ifd"]`, "1"+kb.Tab), chromedp.KeyEvent(kb.Escape))
	var view []int
	for _, n := range byIFD(all) {
		if fixtureIFD(n) >= 1 {
			view = append(view, n)
		}
	}
	b.waitJS(fmt.Sprintf(`document.querySelectorAll('#tbody tr').length === %d`, len(view)))
	if got := b.lines(); fmt.Sprint(got) != fmt.Sprint(view) {
		t.Fatalf("ifd >= 1: %v\nwant %v", got, view)
	}
	b.run("the cut is drawn", chromedp.WaitVisible(`.hist.cut[data-field="ifd"] line.cutline`))
	b.shot("03-cut-ifd-min-1")

	// keyboard: g first, y keep, y keep, n drop, j skip, n drop, k back, u undecided again
	want := map[int]string{}
	b.keys("g", "y", "y", "n", "j", "n", "k", "u")
	want[view[0]], want[view[1]], want[view[2]] = "keep", "keep", "drop"
	b.waitSaved()
	b.shot("04-keyboard-decisions")

	// a reasoning example shows its reasoning folded; a tool-calling one its call and the tool's answer
	reasoning := firstWhere(view[5:], func(n int) bool { return n%4 == 1 })
	b.run("reasoning example", chromedp.Click(fmt.Sprintf(`#tbody tr[data-line="%d"]`, reasoning)),
		chromedp.WaitVisible(fmt.Sprintf(`#detail[data-line="%d"] details.reasoning`, reasoning)))
	if b.boolJS(`document.querySelector('#detail details.reasoning').open`) {
		t.Errorf("reasoning is not folded")
	}
	tools := firstWhere(view, func(n int) bool { return n%4 == 2 })
	b.run("tool example", chromedp.Click(fmt.Sprintf(`#tbody tr[data-line="%d"]`, tools)),
		chromedp.WaitVisible(fmt.Sprintf(`#detail[data-line="%d"] .toolcall`, tools)),
		chromedp.WaitVisible(`#detail .turn.tool`))
	if got := b.stringJS(`document.querySelector('#detail .turn.tool .content').textContent`); !strings.HasPrefix(got, "sunny") {
		t.Errorf("tool result shows %q", got)
	}
	b.shot("05-tool-calls")

	// edit the response of a prompt/response example: e, type, Ctrl+Enter (saves and keeps it)
	edited := firstWhere(view[5:], func(n int) bool { return n%4 == 0 })
	newResponse := fmt.Sprintf("Edited in the browser: %d + %d = %d.", edited, edited, 2*edited)
	ta := `textarea[data-path="response"]`
	b.run("edit", chromedp.Click(fmt.Sprintf(`#tbody tr[data-line="%d"]`, edited)),
		chromedp.WaitVisible(fmt.Sprintf(`#detail[data-line="%d"] .turn`, edited)))
	b.keys("e")
	// an edit training could not read (an empty response) is refused, and the form says why
	b.run("empty the response", chromedp.WaitVisible(ta), chromedp.SetValue(ta, " "), chromedp.Focus(ta),
		chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	b.waitJS(`document.getElementById('editerror').textContent.includes('empty response')`)
	b.shot("06a-edit-refused")
	b.run("type the response", chromedp.SetValue(ta, newResponse), chromedp.Focus(ta))
	b.shot("06-editing")
	b.run("save the edit", chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	b.waitJS(fmt.Sprintf(`!!document.querySelector('#tbody tr[data-line="%d"] .badge.edited')`, edited))
	b.waitSaved()
	// the example is drawn again from the server (asynchronously) with the edit
	b.waitJS(fmt.Sprintf(`(() => { const c = Array.from(document.querySelectorAll('#detail[data-line="%d"] .turn.assistant .content')).pop();
		return !!c && c.textContent === %s; })()`, edited, jsonString(newResponse)))
	if got := b.stringJS(fmt.Sprintf(`document.querySelector('#tbody tr[data-line="%d"] td.text').textContent`, edited)); !strings.HasSuffix(got, newResponse) {
		t.Errorf("the table shows %q for the edited line", got)
	}
	want[edited] = "keep"
	b.shot("07-edited")

	// a new filter: clear, cut labels.educational at 0.2 from above, then drop everything shown (N, Enter)
	b.run("clear filters", chromedp.Click(`#clear`))
	b.run("cut labels", chromedp.SendKeys(`input[data-cut="max"][data-field="labels.educational"]`, "0.2"+kb.Tab), chromedp.KeyEvent(kb.Escape))
	var low []int
	for n := 1; n <= fixtureLines; n++ {
		if n != 7 && n%10 <= 2 {
			low = append(low, n)
		}
	}
	b.waitJS(fmt.Sprintf(`document.querySelectorAll('#tbody tr').length === %d`, len(low)))
	b.keys("N")
	b.run("confirm", chromedp.WaitVisible(`#confirm`))
	b.shot("08-bulk-drop-confirm")
	b.keys(kb.Enter)
	b.waitSaved()
	for _, n := range low {
		want[n] = "drop"
	}
	b.shot("09-bulk-dropped")

	// reload: every decision comes back from the server
	b.run("reload", chromedp.Reload(), chromedp.WaitVisible(`body[data-ready="1"]`))
	b.shot("10-reloaded")
	// the view (sort, cut) survives the reload too; then clear it to see every row
	if got, want := b.lines(), byIFD(low); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after reload the view shows %v, want the labels cut sorted by ifd %v", got, want)
	}
	if got := b.stringJS(`document.querySelector('input[data-cut="max"][data-field="labels.educational"]').value`); got != "0.2" {
		t.Errorf("after reload the labels cut is %q", got)
	}
	b.run("clear filters after reload", chromedp.Click(`#clear`))
	b.waitJS(fmt.Sprintf(`document.querySelectorAll('#tbody tr').length === %d`, fixtureLines))
	rows := evalJS[[]struct {
		Line     int    `json:"line"`
		Decision string `json:"decision"`
		Edited   bool   `json:"edited"`
	}](b, `Array.from(document.querySelectorAll('#tbody tr')).map(tr => ({
		line: +tr.dataset.line, decision: tr.querySelector('.badge').textContent,
		edited: !!tr.querySelector('.badge.edited')}))`)
	if len(rows) != fixtureLines {
		t.Fatalf("after reload %d rows", len(rows))
	}
	for _, row := range rows {
		w := want[row.Line]
		if w == "" {
			w = "undecided"
		}
		if row.Decision != w || row.Edited != (row.Line == edited) {
			t.Errorf("after reload line %d: %s (edited %v), want %s (edited %v)", row.Line, row.Decision, row.Edited, w, row.Line == edited)
		}
	}

	// the review file says the same, and data filter --review applies exactly that
	rp := data.ReviewPath(scored)
	st, err := data.ReadReview(rp)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "kept.jsonl")
	rep, err := data.Filter(scored, out, data.FilterOptions{Review: st, ReviewFile: rp})
	if err != nil {
		t.Fatal(err)
	}
	var wantOut []string
	for n := 1; n <= fixtureLines; n++ {
		switch {
		case n == 7 || want[n] == "drop":
		case n == edited:
			wantOut = append(wantOut, fmt.Sprintf(`{"prompt":"Question %d: what is %d plus %d?","response":%s}`, n, n, n, jsonString(newResponse)))
		default:
			raw, _, err := data.SplitScored([]byte(scoredLine(n)))
			if err != nil {
				t.Fatal(err)
			}
			wantOut = append(wantOut, string(raw))
		}
	}
	gotOut, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(gotOut) != strings.Join(wantOut, "\n")+"\n" {
		t.Errorf("data filter --review wrote:\n%s\nwant:\n%s", gotOut, strings.Join(wantOut, "\n"))
	}
	drops := 0
	for _, d := range want {
		if d == "drop" {
			drops++
		}
	}
	edits := 0
	if want[edited] == "keep" {
		edits = 1
	}
	if rep.Review.Dropped != drops || rep.Review.Edited != edits || rep.Kept != len(wantOut) {
		t.Errorf("filter report: %+v, review %+v; want %d review drops, %d edits, %d kept", rep, rep.Review, drops, edits, len(wantOut))
	}
}

func firstWhere(lines []int, ok func(int) bool) int {
	for _, n := range lines {
		if ok(n) {
			return n
		}
	}
	panic("no such line in the fixture")
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// browser runs chromedp actions for a test, failing it with the step's name.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

func (b *browser) run(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.shot("failed-" + strings.ReplaceAll(step, " ", "-"))
		b.t.Fatalf("%s: %v", step, err)
	}
}

// keys presses keys on the page, one at a time.
func (b *browser) keys(keys ...string) {
	b.t.Helper()
	for _, k := range keys {
		b.run("key "+k, chromedp.KeyEvent(k))
	}
}

func (b *browser) shot(name string) {
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

func (b *browser) waitJS(expr string) {
	b.t.Helper()
	b.run("wait for "+expr, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(10*time.Second)))
}

// waitSaved waits until every decision sent has been answered and the page says saved.
func (b *browser) waitSaved() {
	b.t.Helper()
	b.waitJS(`S.pending === 0 && document.getElementById('status').textContent === 'saved ✓'`)
}

func (b *browser) lines() []int {
	b.t.Helper()
	return evalJS[[]int](b, `Array.from(document.querySelectorAll('#tbody tr')).map(tr => +tr.dataset.line)`)
}

// evalJS evaluates expr in the page and decodes its value.
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.shot("failed-eval")
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

func (b *browser) intJS(expr string) int {
	b.t.Helper()
	f := evalJS[float64](b, expr)
	if f != math.Trunc(f) {
		b.t.Fatalf("%s = %v, not an integer", expr, f)
	}
	return int(f)
}

func (b *browser) boolJS(expr string) bool {
	b.t.Helper()
	return evalJS[bool](b, expr)
}

func (b *browser) stringJS(expr string) string {
	b.t.Helper()
	return evalJS[string](b, expr)
}
