package ggufconv

import (
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// TestMain says in one line which tests were skipped for want of LORAKIT_SHARED.
func TestMain(m *testing.M) { testenv.Main(m) }
