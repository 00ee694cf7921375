package config

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps config a leaf: the standard library, viper for the
// layering of sources, pflag for the flags and yaml for the strict pass over
// the files; nothing of dcache and nothing that would drag a logger or FUSE
// into every tool that reads the configuration.
func TestImports(t *testing.T) {
	t.Parallel()
	allowed := map[string]bool{
		"github.com/spf13/viper": true, "github.com/spf13/pflag": true, "go.yaml.in/yaml/v3": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			stdlib := !strings.Contains(strings.Split(path, "/")[0], ".")
			if !stdlib && !allowed[path] {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
