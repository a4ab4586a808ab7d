package daemon

import (
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// moduleRoot is the repository's root, from agent/daemon.
const moduleRoot = "../.."

// goPackage is one package of the module as go/build sees it.
type goPackage struct {
	path    string // import path
	dir     string
	imports []string // of its non-test files
	tests   []string // of its test files
}

// modulePackages lists every package of the module with its imports, from
// the sources (no go command, no build).
func modulePackages(t *testing.T) (module string, pkgs []goPackage) {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join(moduleRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(mod), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			module = strings.TrimSpace(m)
		}
	}
	if module == "" {
		t.Fatal("go.mod names no module")
	}
	ctx := build.Default
	err = filepath.WalkDir(moduleRoot, func(dir string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			return nil
		}
		name := e.Name()
		if dir != moduleRoot && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "tmp" || name == "node_modules") {
			return filepath.SkipDir
		}
		p, err := ctx.ImportDir(dir, 0)
		if err != nil {
			return nil // no Go files here (or only ignored ones)
		}
		rel, _ := filepath.Rel(moduleRoot, dir)
		ip := module
		if rel != "." {
			ip = path.Join(module, filepath.ToSlash(rel))
		}
		pkgs = append(pkgs, goPackage{path: ip, dir: dir, imports: p.Imports,
			tests: append(slices.Clone(p.TestImports), p.XTestImports...)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("found %d packages under %s: the walk is broken", len(pkgs), moduleRoot)
	}
	return module, pkgs
}

// under reports whether import path p is dir or below it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// TestLayering holds the tree's layering: the libraries (buffer,
// inference, models) import nothing of the agent, not even in their tests;
// no package but the vigil command imports the daemon, the one package that
// wires everything together.
func TestLayering(t *testing.T) {
	module, pkgs := modulePackages(t)
	agent, daemon := module+"/agent", module+"/agent/daemon"
	libraries := []string{module + "/buffer", module + "/inference", module + "/models"}
	for _, p := range pkgs {
		for _, lib := range libraries {
			if !under(p.path, lib) {
				continue
			}
			for _, imp := range append(slices.Clone(p.imports), p.tests...) {
				if under(imp, agent) {
					t.Errorf("%s imports %s: a library imports nothing of the agent", p.path, imp)
				}
			}
		}
		if p.path == agent || p.path == daemon {
			continue
		}
		for _, imp := range append(slices.Clone(p.imports), p.tests...) {
			if imp == daemon {
				t.Errorf("%s imports %s: only the vigil command (package main under agent/) may", p.path, imp)
			}
		}
	}
}

// TestScorerContractHasNoCgo: the inference package without cgo (the
// TFLite implementation left out) still type-checks, and it declares the
// Scorer interface, so that another implementation can be written and
// tested without a C toolchain.
func TestScorerContractHasNoCgo(t *testing.T) {
	ctx := build.Default
	ctx.CgoEnabled = false
	dir := filepath.Join(moduleRoot, "inference")
	p, err := ctx.ImportDir(dir, 0)
	if err != nil {
		t.Fatalf("inference without cgo: %v", err)
	}
	if len(p.CgoFiles) > 0 {
		t.Fatalf("cgo files %v in the cgo-free build of inference", p.CgoFiles)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range p.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil)}
	pkg, err := conf.Check("inference", fset, files, nil)
	if err != nil {
		t.Fatalf("inference does not compile without cgo (files %v): %v", p.GoFiles, err)
	}
	obj := pkg.Scope().Lookup("Scorer")
	if obj == nil {
		t.Fatalf("the cgo-free part of inference (%v) does not declare Scorer", p.GoFiles)
	}
	if _, ok := obj.Type().Underlying().(*types.Interface); !ok {
		t.Fatalf("inference.Scorer is a %v, want an interface", obj.Type())
	}
}
