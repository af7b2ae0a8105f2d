package main

import (
	"bytes"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// TestServeBusyPortNamesFlag: a port already in use is reported with the flag that picks another.
func TestServeBusyPortNamesFlag(t *testing.T) {
	model := filepath.Join(testenv.Dir(t, "models/stories260K"), "models", "stories260K")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"serve", "--model", model, "--port", port})
	err = root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--port") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("serve on a busy port: %v", err)
	}
}
