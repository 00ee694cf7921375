package device_test

import (
	"fmt"
	"math/rand/v2"
	"syscall"

	"github.com/dcache/dcache/internal/device"
)

// ExampleCrashable simulates a power loss: synced data survives, unsynced
// writes may be lost or torn.
func ExampleCrashable() {
	c := device.NewCrashable(4096)
	c.WriteAt([]byte("synced"), 0)
	c.Sync()
	c.WriteAt([]byte("maybe"), 512)
	after := c.Crash(rand.New(rand.NewPCG(1, 1)))
	b := make([]byte, 6)
	after.ReadAt(b, 0)
	fmt.Printf("%s\n", b)
	// Output: synced
}

// ExampleNewFaulty fails a device at run time, as a disk that starts
// returning EIO.
func ExampleNewFaulty() {
	sw := device.NewSwitch(device.OpWrite|device.OpSync, syscall.EIO)
	d := device.NewFaulty(device.NewMem(4096), sw)
	_, err := d.WriteAt([]byte("ok"), 0)
	fmt.Println(err)
	sw.Set(true)
	_, err = d.WriteAt([]byte("fails"), 0)
	fmt.Println(err)
	// Output:
	// <nil>
	// device: write mem: 5 bytes at 0: injected: input/output error
}
