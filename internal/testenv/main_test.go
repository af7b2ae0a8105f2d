package testenv

import "testing"

// TestMain says in one line which tests were skipped for want of LORAKIT_SHARED.
func TestMain(m *testing.M) { Main(m) }
