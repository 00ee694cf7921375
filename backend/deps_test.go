package backend

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports holds the layering true: the backend knows nothing of the
// engine, the log area or FUSE, and needs nothing beyond the standard
// library, logrus and x/sys.
func TestImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(gobin, "list", "-deps",
		"-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := []string{
		"github.com/dcache/dcache/backend",
		"github.com/sirupsen/logrus",
		"golang.org/x/sys/",
	}
	forbidden := []string{"github.com/dcache/dcache/cachelayer", "github.com/dcache/dcache/logarea", "github.com/hanwen/go-fuse"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("backend depends on %s", dep)
			}
		}
		ok := false
		for _, a := range allowed {
			if dep == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(dep, a)) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("backend depends on %s, which is not an allowed dependency", dep)
		}
	}
}
