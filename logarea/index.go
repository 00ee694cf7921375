package logarea

// posIndex maps the LSNs still in the log to their logical positions. It is
// a slice used as a queue: appends at the back, trims from the front, with
// the consumed front reclaimed once it is the larger part.
type posIndex struct {
	base LSN      // LSN of pos[off]
	pos  []uint64 // pos[off+i] is the position of base+i
	off  int
}

func (x *posIndex) reset(base LSN, pos []uint64) {
	x.base, x.pos, x.off = base, pos, 0
}

func (x *posIndex) len() int { return len(x.pos) - x.off }

func (x *posIndex) push(p uint64) { x.pos = append(x.pos, p) }

// at returns the position of lsn, which must be in [base, base+len).
func (x *posIndex) at(lsn LSN) uint64 { return x.pos[x.off+int(lsn-x.base)] }

// dropBefore forgets every LSN below lsn (at most base+len).
func (x *posIndex) dropBefore(lsn LSN) {
	if lsn <= x.base {
		return
	}
	x.off += int(lsn - x.base)
	x.base = lsn
	if x.off > 1024 && x.off > len(x.pos)/2 {
		n := copy(x.pos, x.pos[x.off:])
		x.pos = x.pos[:n]
		x.off = 0
	}
}
