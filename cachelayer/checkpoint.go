package cachelayer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dcache/dcache/backend"
)

// Metadata images. The backend frames each file (header, length, CRC); the
// stream inside is ours:
//
//	+---------+-----------+------------+---------+-------------------+-----+
//	| version | cut LSN X | replay LSN | nextIno | entries ...       | end |
//	| uvarint | uvarint   | uvarint R  | uvarint | kind byte + body  | 0   |
//	+---------+-----------+------------+---------+-------------------+-----+
//
// Entries use the mutation encoding (put/delete inode, dirent, xattr) plus
// the extent kinds below. A full checkpoint lists every inode, dirent, xattr
// and extent of the cut; a delta lists, for each object changed since the
// previous file, either its deletion or its inode, all its extents and all
// its xattrs, and each changed directory entry. Recovery loads the newest
// checkpoint, applies the deltas after it in order, and replays the log
// from LSN R (every op whose effects might be missing from the image).
const metaVersion = 1

// Entry kinds only found in metadata images. Part of the format.
const (
	mEnd          mutKind = 0
	mPutExtent    mutKind = 20 // ino, off, len, skip, segment, segment offset, record length, crc
	mClearExtents mutKind = 21 // ino
	mClearXattrs  mutKind = 22 // ino
)

// metaHeader is what a metadata image says about the log.
type metaHeader struct {
	cut     uint64 // state after every op up to this LSN
	replay  uint64 // replay the log from this LSN on
	nextIno Ino
}

type metaEncoder struct {
	w   *bufio.Writer
	buf []byte
	n   int64
}

func newMetaEncoder(w io.Writer) *metaEncoder {
	return &metaEncoder{w: bufio.NewWriterSize(w, 1<<20)}
}

func (m *metaEncoder) emit(b []byte) error {
	m.n += int64(len(b))
	_, err := m.w.Write(b)
	return err
}

func (m *metaEncoder) header(h metaHeader) error {
	b := binary.AppendUvarint(m.buf[:0], metaVersion)
	b = binary.AppendUvarint(b, h.cut)
	b = binary.AppendUvarint(b, h.replay)
	b = binary.AppendUvarint(b, uint64(h.nextIno))
	return m.emit(b)
}

func (m *metaEncoder) mut(mu mutation) error {
	m.buf = appendMutation(m.buf[:0], &mu)
	return m.emit(m.buf)
}

func (m *metaEncoder) extent(x Extent) error {
	b := append(m.buf[:0], byte(mPutExtent))
	b = binary.AppendUvarint(b, uint64(x.Ino))
	b = binary.AppendUvarint(b, x.Off)
	b = binary.AppendUvarint(b, uint64(x.Len))
	b = binary.AppendUvarint(b, uint64(x.Skip))
	b = binary.AppendUvarint(b, x.Addr.Segment)
	b = binary.AppendUvarint(b, x.Addr.Off)
	b = binary.AppendUvarint(b, uint64(x.Addr.Len))
	b = binary.LittleEndian.AppendUint32(b, x.Addr.CRC)
	m.buf = b
	return m.emit(b)
}

func (m *metaEncoder) clear(kind mutKind, ino Ino) error {
	b := append(m.buf[:0], byte(kind))
	b = binary.AppendUvarint(b, uint64(ino))
	m.buf = b
	return m.emit(b)
}

func (m *metaEncoder) end() error {
	if err := m.emit([]byte{byte(mEnd)}); err != nil {
		return err
	}
	return m.w.Flush()
}

// object writes one object's inode, extents and xattrs from the cut.
func (m *metaEncoder) object(cut *meta, in Inode, delta bool) error {
	if err := m.mut(mutation{kind: mPutInode, inode: in}); err != nil {
		return err
	}
	if delta {
		if err := m.clear(mClearExtents, in.Ino); err != nil {
			return err
		}
		if err := m.clear(mClearXattrs, in.Ino); err != nil {
			return err
		}
	}
	if in.IsSymlink() {
		if s, ok := cut.symlinks.Get(Symlink{Ino: in.Ino}); ok {
			if err := m.mut(mutation{kind: mSymlink, ino: in.Ino, name: s.Target}); err != nil {
				return err
			}
		}
	}
	var err error
	cut.extents.Ascend(Extent{Ino: in.Ino}, func(x Extent) bool {
		if x.Ino != in.Ino {
			return false
		}
		err = m.extent(x)
		return err == nil
	})
	if err != nil {
		return err
	}
	cut.xattrsOf(in.Ino, func(x Xattr) bool {
		err = m.mut(mutation{kind: mPutXattr, ino: x.Ino, name: x.Name, value: x.Value})
		return err == nil
	})
	return err
}

// writeCheckpoint encodes every object of the cut.
func writeCheckpoint(w io.Writer, cut *meta, h metaHeader) (int64, error) {
	enc := newMetaEncoder(w)
	if err := enc.header(h); err != nil {
		return 0, err
	}
	var err error
	cut.inodes.Scan(func(in Inode) bool {
		err = enc.object(cut, in, false)
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	cut.dirents.Scan(func(d Dirent) bool {
		err = enc.mut(mutation{kind: mPutDirent, dirent: d})
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	return enc.n, enc.end()
}

// writeDelta encodes what changed since the previous image.
func writeDelta(w io.Writer, cut *meta, h metaHeader, ch changeSet) (int64, error) {
	enc := newMetaEncoder(w)
	if err := enc.header(h); err != nil {
		return 0, err
	}
	inos := make([]Ino, 0, len(ch.inos))
	for ino := range ch.inos {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	for _, ino := range inos {
		in, ok := cut.inode(ino)
		var err error
		if ok {
			err = enc.object(cut, in, true)
		} else {
			err = enc.mut(mutation{kind: mDelInode, ino: ino})
		}
		if err != nil {
			return 0, err
		}
	}
	keys := make([]direntKey, 0, len(ch.dirents))
	for k := range ch.dirents {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b direntKey) int {
		if a.parent != b.parent {
			if a.parent < b.parent {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	for _, k := range keys {
		var err error
		if d, ok := cut.lookup(k.parent, k.name); ok {
			err = enc.mut(mutation{kind: mPutDirent, dirent: d})
		} else {
			err = enc.mut(mutation{kind: mDelDirent, dirent: Dirent{Parent: k.parent, Name: k.name}})
		}
		if err != nil {
			return 0, err
		}
	}
	return enc.n, enc.end()
}

// loadImage applies one metadata image to m.
func loadImage(r io.Reader, m *meta) (metaHeader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var h metaHeader
	rd := &streamDecoder{r: br}
	if v := rd.uvarint(); v != metaVersion && rd.err == nil {
		return h, fmt.Errorf("cachelayer: metadata image version %d, this build reads %d", v, metaVersion)
	}
	h.cut = rd.uvarint()
	h.replay = rd.uvarint()
	h.nextIno = Ino(rd.uvarint())
	for rd.err == nil {
		kind := mutKind(rd.byte())
		if rd.err != nil {
			break
		}
		switch kind {
		case mEnd:
			if m.nextIno < h.nextIno {
				m.nextIno = h.nextIno
			}
			return h, nil
		case mPutInode:
			in := rd.inode()
			in.Blocks = 0
			m.putInode(in)
		case mDelInode:
			ino := Ino(rd.uvarint())
			m.inodes.Delete(Inode{Ino: ino})
			m.dropObject(ino)
		case mPutDirent:
			var d Dirent
			d.Parent = Ino(rd.uvarint())
			d.Name = rd.string()
			d.Ino = Ino(rd.uvarint())
			d.Type = uint32(rd.uvarint())
			m.dirents.Set(d)
		case mDelDirent:
			var d Dirent
			d.Parent = Ino(rd.uvarint())
			d.Name = rd.string()
			m.dirents.Delete(d)
		case mPutXattr:
			x := Xattr{Ino: Ino(rd.uvarint())}
			x.Name = rd.string()
			x.Value = rd.bytes()
			m.xattrs.Set(x)
		case mSymlink:
			s := Symlink{Ino: Ino(rd.uvarint())}
			s.Target = rd.string()
			m.symlinks.Set(s)
		case mPutExtent:
			var x Extent
			x.Ino = Ino(rd.uvarint())
			x.Off = rd.uvarint()
			x.Len = uint32(rd.uvarint())
			x.Skip = uint32(rd.uvarint())
			x.Addr.Segment = rd.uvarint()
			x.Addr.Off = rd.uvarint()
			x.Addr.Len = uint32(rd.uvarint())
			x.Addr.CRC = rd.uint32()
			m.extents.Set(x)
		case mClearExtents:
			ino := Ino(rd.uvarint())
			var xs []Extent
			m.extents.Ascend(Extent{Ino: ino}, func(x Extent) bool {
				if x.Ino != ino {
					return false
				}
				xs = append(xs, x)
				return true
			})
			for _, x := range xs {
				m.extents.Delete(x)
			}
		case mClearXattrs:
			ino := Ino(rd.uvarint())
			var xs []Xattr
			m.xattrsOf(ino, func(x Xattr) bool { xs = append(xs, x); return true })
			for _, x := range xs {
				m.xattrs.Delete(x)
			}
		default:
			return h, fmt.Errorf("cachelayer: metadata image: unknown entry kind %d", kind)
		}
	}
	if errors.Is(rd.err, io.EOF) || errors.Is(rd.err, io.ErrUnexpectedEOF) {
		return h, fmt.Errorf("cachelayer: metadata image ends before its end marker")
	}
	return h, rd.err
}

// streamDecoder reads the encodings from a stream; the first error sticks.
type streamDecoder struct {
	r   *bufio.Reader
	err error
	tmp []byte
}

func (d *streamDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	b, err := d.r.ReadByte()
	if err != nil {
		d.err = err
	}
	return b
}

func (d *streamDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.r)
	if err != nil {
		d.err = err
	}
	return v
}

func (d *streamDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(d.r)
	if err != nil {
		d.err = err
	}
	return v
}

func (d *streamDecoder) uint32() uint32 {
	var b [4]byte
	if d.err != nil {
		return 0
	}
	if _, err := io.ReadFull(d.r, b[:]); err != nil {
		d.err = err
		return 0
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (d *streamDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > 1<<24 {
		d.err = fmt.Errorf("cachelayer: metadata image: field of %d bytes", n)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = err
		return nil
	}
	return b
}

func (d *streamDecoder) string() string { return string(d.bytes()) }

func (d *streamDecoder) time() Time {
	s := d.varint()
	ns := d.uvarint()
	if ns >= 1e9 && d.err == nil {
		d.err = fmt.Errorf("cachelayer: metadata image: nanoseconds %d", ns)
	}
	return MakeTime(s, uint32(ns))
}

func (d *streamDecoder) inode() Inode {
	var in Inode
	in.Ino = Ino(d.uvarint())
	in.Parent = Ino(d.uvarint())
	in.Mode = uint32(d.uvarint())
	in.Nlink = uint32(d.uvarint())
	in.Uid = uint32(d.uvarint())
	in.Gid = uint32(d.uvarint())
	in.Rdev = uint32(d.uvarint())
	in.Size = d.uvarint()
	in.Atime = d.time()
	in.Mtime = d.time()
	in.Ctime = d.time()
	return in
}

// loadMeta reads the newest checkpoint and the deltas after it. ok is false
// for a backend that holds no metadata yet.
func loadMeta(be *backend.Store) (m meta, h metaHeader, lastSeq uint64, ok bool, err error) {
	cp, deltas, err := be.LoadMeta()
	if err != nil {
		return meta{}, h, 0, false, err
	}
	if cp == nil {
		if len(deltas) > 0 {
			return meta{}, h, 0, false, fmt.Errorf("cachelayer: backend holds metadata deltas but no checkpoint")
		}
		return meta{}, h, 0, false, nil
	}
	m = newMeta()
	for _, f := range append([]*backend.MetaFile{cp}, deltas...) {
		rc, err := f.Open()
		if err != nil {
			return meta{}, h, 0, false, err
		}
		h, err = loadImage(rc, &m)
		if cerr := rc.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return meta{}, h, 0, false, fmt.Errorf("cachelayer: load %v %d: %w", f.Kind, f.Seq, err)
		}
		lastSeq = f.Seq
	}
	return m, h, lastSeq, true, nil
}
