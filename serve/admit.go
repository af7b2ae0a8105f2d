package serve

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/lorakit/lorakit/serve/openai"
)

// Admission: every request's work and reply size are bounded before any of it is done. A request makes
// prompts × n choices (at most the queue's size: more could never be queued at once), each prompt is refused by
// its byte length when no text that long fits the context, and tokenized with an early stop when it might.

// limitedEncoder is implemented by models that can stop tokenizing past a limit (backend.Backend).
type limitedEncoder interface {
	EncodeLimit(text string, addSpecial bool, limit int) ([]int, bool)
}

// maxTokenBytes is the longest text any one token of m stands for (at least 1).
func maxTokenBytes(m Model) int {
	longest := 1
	for id := range m.VocabSize() {
		longest = max(longest, len(m.TokenText(id)))
	}
	return longest
}

// promptByteLimit is the most bytes a prompt of maxLen tokens can hold: each token stands for at most
// maxTokBytes bytes; the factor 2 and the constant leave room for normalizers that shorten text (NFC, NFKC).
func (s *Server) promptByteLimit() int { return 2*s.maxLen*s.maxTokBytes + 1024 }

// checkBytes refuses a prompt (or the messages, param) of n bytes that cannot fit the context.
func (s *Server) checkBytes(param string, n int) error {
	if limit := s.promptByteLimit(); n > limit {
		return openai.PromptTooLong(param, s.maxLen, fmt.Sprintf("the %s are %d bytes, more than any text of %d tokens can be (%d bytes)", param, n, s.maxLen, limit))
	}
	return nil
}

// encode tokenizes a prompt, refusing it by its byte length first and stopping once it exceeds the context.
func (s *Server) encode(param, text string, addSpecial bool) ([]int, error) {
	if err := s.checkBytes(param, len(text)); err != nil {
		return nil, err
	}
	var ids []int
	ok := true
	if le, can := s.model.(limitedEncoder); can {
		ids, ok = le.EncodeLimit(text, addSpecial, s.maxLen)
	} else {
		ids = s.model.Encode(text, addSpecial)
		ok = len(ids) <= s.maxLen
	}
	if !ok {
		return nil, openai.PromptTooLong(param, s.maxLen, fmt.Sprintf("the %s alone are more than %d tokens", param, s.maxLen))
	}
	return ids, nil
}

// checkChoices bounds the choices (prompts × n) of one request.
func (s *Server) checkChoices(prompts, n int) error {
	if n > s.maxN {
		return openai.BadRequest("n", "n must be at most %d on this server (--max-n), got %d", s.maxN, n)
	}
	if c := prompts * n; c > s.maxChoices {
		param := "n"
		if n == 1 {
			param = "prompt"
		}
		return openai.BadRequest(param, "this request asks for %d prompts × n %d = %d choices; the server takes at most %d "+
			"per request (--max-queue): send fewer prompts or a smaller n", prompts, n, c, s.maxChoices)
	}
	return nil
}

// checkEcho bounds the echoed text of a completions reply (each prompt's text once per choice).
func (s *Server) checkEcho(echoText []string, n int) error {
	total := 0
	for _, t := range echoText {
		total += len(t) * n
	}
	if limit := 8 * s.cfg.MaxBodyBytes; int64(total) > limit {
		return openai.BadRequest("echo", "echo would repeat %d bytes of prompt text (prompts × n), more than the %d-byte limit of a reply: send fewer or shorter prompts, a smaller n, or echo false", total, limit)
	}
	return nil
}

// memoryReturner gives a large request's memory back to the OS shortly after it is done (at most once per
// delay, however many large requests end meanwhile), instead of leaving it to the runtime's slow background
// scavenger.
type memoryReturner struct {
	pending atomic.Bool
	delay   time.Duration
}

// after is called once a request that read size bytes is done.
func (m *memoryReturner) after(size int64) {
	if size < 1<<20 || !m.pending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(m.delay, func() {
		m.pending.Store(false)
		debug.FreeOSMemory()
	})
}
