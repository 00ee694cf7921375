package backend_test

import (
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/dcache/dcache/backend"
)

// A destage: append records, make them durable, then persist the metadata
// that points at them. Recovery loads the metadata and reads the records.
func Example() {
	tmp, err := os.MkdirTemp("", "backend-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "backend")

	s, created, err := backend.Open(backend.OSFS{}, dir, backend.Config{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", created)

	a, err := s.Append([]byte("hello, segment"))
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Sync(); err != nil { // only now may metadata point at a
		log.Fatal(err)
	}
	w, err := s.CreateMeta(backend.MetaCheckpoint, 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(w, "object 1 -> %d:%d+%d", a.Segment, a.Off, a.Len)
	if err := w.Commit(); err != nil {
		log.Fatal(err)
	}
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}

	s, created, err = backend.Open(backend.OSFS{}, dir, backend.Config{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	cp, deltas, err := s.LoadMeta()
	if err != nil {
		log.Fatal(err)
	}
	r, err := cp.Open()
	if err != nil {
		log.Fatal(err)
	}
	stream, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Close(); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, a.Len)
	if err := s.Read(a, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", created, "deltas:", len(deltas))
	fmt.Printf("%v %d: %s\n", cp.Kind, cp.Seq, stream)
	fmt.Printf("%s\n", buf)
	// Output:
	// created: true
	// created: false deltas: 0
	// checkpoint 1: object 1 -> 1:4096+14
	// hello, segment
}
