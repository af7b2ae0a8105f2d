// Command cyclo is the complexity ratchet CI runs (.ci/check/10-staticcheck.sh): it lists every function of the
// non-test Go files below the given folders (default ".") whose cyclomatic complexity exceeds -over (30), and
// exits 1 when one is not excused. Tests are left out: a test is a flat list of checks, which splitting would not
// make easier to read. A function is excused by a line of its doc comment that starts with "complexity:"
// and says why it is one piece (e.g. "complexity: one switch over the 40 opcodes, each case a line").
//
// Cyclomatic complexity is counted as gocyclo counts it: 1, plus one for each if, for, range, non-default case
// and select clause, and each && and ||; function literals count toward the function that holds them.
// It is a few lines of go/ast rather than a dependency so that CI needs no module beyond the standard library.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// finding is one function over the limit.
type finding struct {
	pos     token.Position
	name    string
	n       int
	excused bool
}

func main() {
	over := flag.Int("over", 30, "report functions whose cyclomatic complexity exceeds this")
	all := flag.Bool("all", false, "also list excused functions")
	flag.Parse()
	roots := flag.Args()
	if len(roots) == 0 {
		roots = []string{"."}
	}
	var found []finding
	for _, root := range roots {
		f, err := scan(root, *over)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cyclo:", err)
			os.Exit(2)
		}
		found = append(found, f...)
	}
	bad := 0
	for _, f := range found {
		switch {
		case !f.excused:
			bad++
			fmt.Printf("%s: %s has cyclomatic complexity %d > %d: split it into named steps, or say why it is one piece in a \"complexity:\" line of its doc comment\n", f.pos, f.name, f.n, *over)
		case *all:
			fmt.Printf("%s: %s: %d (excused)\n", f.pos, f.name, f.n)
		}
	}
	if bad > 0 {
		os.Exit(1)
	}
}

// scan parses every .go file below root (skipping testdata, vendor and dot folders) and returns the functions
// over the limit, sorted by position.
func scan(root string, over int) ([]finding, error) {
	fset := token.NewFileSet()
	var out []finding
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (n == "testdata" || n == "vendor" || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			if n := complexity(fn); n > over {
				out = append(out, finding{fset.Position(fn.Pos()), funcName(fn), n, excused(fn.Doc)})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].pos.Filename != out[j].pos.Filename {
			return out[i].pos.Filename < out[j].pos.Filename
		}
		return out[i].pos.Line < out[j].pos.Line
	})
	return out, err
}

// complexity is fn's cyclomatic complexity, counted as gocyclo does.
func complexity(fn *ast.FuncDecl) int {
	n := 1
	ast.Inspect(fn.Body, func(node ast.Node) bool {
		switch x := node.(type) {
		case *ast.IfStmt, *ast.ForStmt, *ast.RangeStmt:
			n++
		case *ast.CaseClause:
			if x.List != nil { // default: is not a branch of its own
				n++
			}
		case *ast.CommClause:
			if x.Comm != nil {
				n++
			}
		case *ast.BinaryExpr:
			if x.Op == token.LAND || x.Op == token.LOR {
				n++
			}
		}
		return true
	})
	return n
}

// excused reports whether the doc comment has a "complexity:" line with a reason after it.
func excused(doc *ast.CommentGroup) bool {
	if doc == nil {
		return false
	}
	for _, line := range strings.Split(doc.Text(), "\n") {
		if why, ok := strings.CutPrefix(strings.TrimSpace(line), "complexity:"); ok && strings.TrimSpace(why) != "" {
			return true
		}
	}
	return false
}

// funcName is "Name" or "Recv.Name".
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	for {
		switch x := t.(type) {
		case *ast.StarExpr:
			t = x.X
			continue
		case *ast.IndexExpr:
			t = x.X
			continue
		case *ast.IndexListExpr:
			t = x.X
			continue
		case *ast.Ident:
			return x.Name + "." + fn.Name.Name
		}
		return fn.Name.Name
	}
}
