package main

import (
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
)

// TestNoAVX512 checks that the CLI, not the kernels, reads LORAKIT_NO_AVX512 and --no-avx512.
func TestNoAVX512(t *testing.T) {
	defer kernels.SetAVX512(true)
	for _, tc := range []struct {
		env  string
		args []string
		want bool // AVX-512 tile allowed
	}{
		{"", nil, true},
		{"1", nil, false},
		{"0", nil, true},
		{"false", nil, true},
		{"yes", nil, false},
		{"", []string{"--no-avx512"}, false},
		{"1", []string{"--no-avx512=false"}, true},
	} {
		t.Setenv("LORAKIT_NO_AVX512", tc.env)
		kernels.SetAVX512(true)
		def := kernels.AVX512() // what this CPU and build allow
		root := newRootCmd()
		if err := root.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		root.PersistentPreRun(root, nil)
		if got := kernels.AVX512(); got != (tc.want && def) {
			t.Errorf("env %q args %v: AVX-512 tile %v, want %v", tc.env, tc.args, got, tc.want && def)
		}
	}
}
