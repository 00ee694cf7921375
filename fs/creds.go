package fs

import (
	"bytes"
	"os"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dcache/dcache/cachelayer"
)

// creator is the caller of a request creating an object of the given mode.
// FUSE tells only the caller's uid, gid and pid; a setgid, group-executable
// file made in a setgid directory keeps its setgid bit only when the
// caller is in the directory's group, so then the supplementary groups are
// read from /proc (none when the process is gone or out of sight: the
// engine then drops the bit, the safe side).
func creator(h *fuse.InHeader, mode uint32) cachelayer.Caller {
	c := caller(h)
	const sgidExec = syscall.S_ISGID | syscall.S_IXGRP
	if mode&syscall.S_IFMT != syscall.S_IFDIR && mode&sgidExec == sgidExec && h.Uid != 0 {
		c.Groups = procGroups(h.Pid)
	}
	return c
}

// procGroups returns the supplementary groups of process (or thread) pid.
func procGroups(pid uint32) []uint32 {
	if pid == 0 {
		return nil
	}
	status, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	return parseGroups(status)
}

// parseGroups reads the Groups line of a /proc/PID/status file.
func parseGroups(status []byte) []uint32 {
	for _, line := range bytes.Split(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("Groups:"))
		if !ok {
			continue
		}
		var groups []uint32
		for _, f := range bytes.Fields(rest) {
			g, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				return nil
			}
			groups = append(groups, uint32(g))
		}
		return groups
	}
	return nil
}
