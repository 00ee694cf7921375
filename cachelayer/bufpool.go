package cachelayer

import "sync"

// bufPool recycles byte buffers in a few size classes. A 4 KiB write takes
// a small buffer, not one made for a 1 MiB chunk: a sync.Pool is emptied by
// every garbage collection, and refilling it with megabyte buffers for small
// requests costs more in clearing, collecting and returning memory to the
// system than the request itself.
type bufPool struct {
	sizes []int // ascending capacities, one per class
	pools []sync.Pool
}

func newBufPool(sizes ...int) *bufPool {
	return &bufPool{sizes: sizes, pools: make([]sync.Pool, len(sizes))}
}

// get returns a buffer of length n, from the smallest class that holds n;
// larger requests get a buffer of their own that put drops.
func (p *bufPool) get(n int) *[]byte {
	for i, size := range p.sizes {
		if n <= size {
			bp, _ := p.pools[i].Get().(*[]byte)
			if bp == nil {
				b := make([]byte, size)
				bp = &b
			}
			*bp = (*bp)[:n]
			return bp
		}
	}
	b := make([]byte, n)
	return &b
}

// put gives back a buffer from get.
func (p *bufPool) put(bp *[]byte) {
	c := cap(*bp)
	for i, size := range p.sizes {
		if c == size {
			p.pools[i].Put(bp)
			return
		}
	}
}
