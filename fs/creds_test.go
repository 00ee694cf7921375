package fs

import (
	"os"
	"slices"
	"testing"
)

func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   []uint32
	}{
		{"Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGroups:\t1000 1001 70000 \nNSpid:\t5\n", []uint32{1000, 1001, 70000}},
		{"Name:\tsh\nGroups:\t\nVmPeak:\t1 kB\n", nil},
		{"Name:\tsh\n", nil},
		{"Groups:\t10 x\n", nil},
		{"Groups:\t4294967296\n", nil},
	} {
		if got := parseGroups([]byte(tc.status)); !slices.Equal(got, tc.want) {
			t.Errorf("parseGroups(%q) = %v, want %v", tc.status, got, tc.want)
		}
	}
}

func TestProcGroups(t *testing.T) {
	want, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	got := procGroups(uint32(os.Getpid()))
	if len(got) != len(want) {
		t.Fatalf("procGroups(self) = %v, getgroups %v", got, want)
	}
	for i := range want {
		if got[i] != uint32(want[i]) {
			t.Errorf("procGroups(self) = %v, getgroups %v", got, want)
		}
	}
	if g := procGroups(0); g != nil {
		t.Errorf("procGroups(0) = %v", g)
	}
}
