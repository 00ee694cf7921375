package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModeCommandArgs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no arguments", nil, "expected MOUNTPOINT and MODE"},
		{"one argument", []string{dir}, "expected MOUNTPOINT and MODE"},
		{"three arguments", []string{dir, "write-back", "x"}, "expected MOUNTPOINT and MODE"},
		{"not mounted", []string{dir, "write-back"}, "is not mounted"},
		{"not dcache", []string{"/proc", "write-back"}, "is not a dcache mount"},
		{"unknown flag", []string{dir, "write-back", "--flushh"}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := modeCmd()
			cmd.SetArgs(tc.args)
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			cmd.SetOut(new(strings.Builder))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// setMode speaks the control-file protocol: the mode's name to mode, then
// "all" to flush when asked; a bad mode is refused before anything is
// written.
func TestSetModeWritesControlFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode      string
		flush     bool
		wantMode  string
		wantFlush string
		usage     bool
	}{
		{"write-through", false, "write-through\n", "", false},
		{"write-around", true, "write-around\n", "all\n", false},
		{"write-back", true, "write-back\n", "all\n", false},
		{"writeback", true, "", "", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctl := t.TempDir()
			for _, n := range []string{"mode", "flush"} {
				if err := os.WriteFile(filepath.Join(ctl, n), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := setMode(ctl, tc.mode, tc.flush)
			var u *usageError
			if tc.usage != errors.As(err, &u) || (!tc.usage && err != nil) {
				t.Fatalf("setMode: %v", err)
			}
			for n, want := range map[string]string{"mode": tc.wantMode, "flush": tc.wantFlush} {
				got, err := os.ReadFile(filepath.Join(ctl, n))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Errorf("%s holds %q, want %q", n, got, want)
				}
			}
		})
	}
	if err := setMode(t.TempDir(), "write-back", false); err == nil || !strings.Contains(err.Error(), "no mode control file") {
		t.Errorf("without control files: %v", err)
	}
}
