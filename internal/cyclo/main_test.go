package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"testing"
)

func TestComplexityAndExcuse(t *testing.T) {
	src := `package p

// f counts: 1 + if + for + range + 2 cases (default not) + && + || + select case (default not) + the literal's if.
//
// complexity: a test of the excuse line.
func f(a, b bool, xs []int, ch chan int) {
	if a && b || !a {
	}
	for i := 0; i < 3; i++ {
	}
	for range xs {
	}
	switch {
	case a:
	case b:
	default:
	}
	select {
	case <-ch:
	default:
	}
	_ = func() { if a {} }
}

// g is not excused: "complexity:" must start a line and give a reason.
// complexity:
func g() {}
`
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "p.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	fns := map[string]*ast.FuncDecl{}
	for _, d := range file.Decls {
		fn := d.(*ast.FuncDecl)
		fns[fn.Name.Name] = fn
	}
	if got := complexity(fns["f"]); got != 10 {
		t.Errorf("complexity(f) = %d, want 10", got)
	}
	if !excused(fns["f"].Doc) || excused(fns["g"].Doc) {
		t.Errorf("excused(f) = %v, excused(g) = %v; want true, false", excused(fns["f"].Doc), excused(fns["g"].Doc))
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	found, err := scan(dir, 9)
	if err != nil || len(found) != 1 || found[0].name != "f" || !found[0].excused {
		t.Errorf("scan over 9 = %+v, %v; want f, excused", found, err)
	}
}
