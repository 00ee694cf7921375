package cachelayer

import (
	"context"
	"syscall"
)

// maxLinks bounds a file's hard links (EMLINK beyond).
const maxLinks = 1<<31 - 1

// builder accumulates one op's mutations: directory entry changes in order,
// then the final version of every inode touched, then deletions. It reads
// through its own pending changes, so an op that touches an inode twice
// (a rename inside one directory) sees its first change.
type builder struct {
	e       *Engine
	t       txn
	inodes  map[Ino]Inode
	order   []Ino
	deleted map[Ino]bool
	refs    []Ino      // references to take when the op commits
	post    []mutation // after the inodes (they need them to exist)
}

func (e *Engine) newBuilder(op OpType, obj Ino) *builder {
	return &builder{e: e, t: txn{op: op, obj: obj}, inodes: make(map[Ino]Inode, 4), deleted: map[Ino]bool{}}
}

func (b *builder) get(ino Ino) (Inode, bool) {
	if b.deleted[ino] {
		return Inode{}, false
	}
	if in, ok := b.inodes[ino]; ok {
		return in, true
	}
	return b.e.st.inode(ino)
}

func (b *builder) put(in Inode) {
	if _, ok := b.inodes[in.Ino]; !ok {
		b.order = append(b.order, in.Ino)
	}
	b.inodes[in.Ino] = in
}

// unlinked drops one link of in (already read through b); the object is
// deleted when nothing refers to it any more, else kept as an orphan until
// its last reference goes.
func (b *builder) unlinked(in Inode, ts Time) {
	if in.IsDir() {
		in.Nlink = 0
	} else if in.Nlink > 0 {
		in.Nlink--
	}
	in.Ctime = ts
	if in.Nlink == 0 && b.e.refs[in.Ino] == 0 {
		b.deleted[in.Ino] = true
		return
	}
	b.put(in)
}

func (b *builder) txn() *txn {
	b.t.refs = b.refs
	for _, ino := range b.order {
		if !b.deleted[ino] {
			b.t.putInode(b.inodes[ino])
		}
	}
	b.t.muts = append(b.t.muts, b.post...)
	for ino := range b.deleted {
		b.t.add(mutation{kind: mDelInode, ino: ino})
	}
	return &b.t
}

// dirLocked returns directory ino, which must exist and be linked.
func (b *builder) dir(ino Ino) (Inode, error) {
	in, ok := b.get(ino)
	if !ok {
		return Inode{}, ErrNotExist
	}
	if !in.IsDir() {
		return Inode{}, ErrNotDir
	}
	if in.Nlink == 0 {
		return Inode{}, ErrNotExist // removed while still open
	}
	return in, nil
}

// GetAttr returns an object's attributes.
func (e *Engine) GetAttr(ino Ino) (Inode, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.st.inode(ino)
	if !ok {
		return Inode{}, ErrNotExist
	}
	return in, nil
}

// Lookup finds name in directory parent. With ref, the object gets one
// reference (the kernel's lookup count) in the same step, so that it cannot
// be deleted between the lookup and the reference.
func (e *Engine) Lookup(parent Ino, name string) (Inode, error) { return e.lookup(parent, name, false) }

// LookupRef is Lookup taking one reference to the object found.
func (e *Engine) LookupRef(parent Ino, name string) (Inode, error) {
	return e.lookup(parent, name, true)
}

func (e *Engine) lookup(parent Ino, name string, ref bool) (Inode, error) {
	if len(name) > MaxNameLen {
		return Inode{}, ErrNameTooLong
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.st.inode(parent)
	if !ok {
		return Inode{}, ErrNotExist
	}
	if !p.IsDir() {
		return Inode{}, ErrNotDir
	}
	d, ok := e.st.lookup(parent, name)
	if !ok {
		return Inode{}, ErrNotExist
	}
	in, ok := e.st.inode(d.Ino)
	if !ok {
		return Inode{}, ErrNotExist
	}
	if ref {
		e.refs[in.Ino]++
	}
	return in, nil
}

// NewObject describes an object to create.
type NewObject struct {
	Mode   uint32 // file type and permission bits (after the caller's umask)
	Rdev   uint32 // device number for character and block devices
	Target string // symlink target
}

// Create makes a new object (regular file, directory, symlink, fifo,
// socket or device node) named name in parent, owned by the caller. The new
// object gets one reference (the kernel's lookup count of the reply).
func (e *Engine) Create(ctx context.Context, parent Ino, name string, obj NewObject, c Caller) (Inode, error) {
	if err := validName(name); err != nil {
		return Inode{}, err
	}
	op := OpCreate
	switch obj.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		op = OpMkdir
	case syscall.S_IFLNK:
		op = OpSymlink
		if obj.Target == "" {
			return Inode{}, ErrNotExist
		}
		if len(obj.Target) > MaxSymlinkLen {
			return Inode{}, ErrNameTooLong
		}
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		op = OpMknod
	default:
		return Inode{}, ErrInvalid
	}
	var made Inode
	_, err := e.run(ctx, maxMetaPayload, nil, func() (*txn, error) {
		b := e.newBuilder(op, parent)
		p, err := b.dir(parent)
		if err != nil {
			return nil, err
		}
		if _, ok := e.st.lookup(parent, name); ok {
			return nil, ErrExist
		}
		if err := e.quotaCheckLocked(parent, int64(len(obj.Target)), 1); err != nil {
			return nil, err
		}
		ts := now()
		in := Inode{
			Ino:   e.st.nextIno,
			Mode:  obj.Mode,
			Nlink: 1,
			Uid:   c.Uid,
			Gid:   c.Gid,
			Rdev:  obj.Rdev,
			Atime: ts, Mtime: ts, Ctime: ts,
		}
		if obj.Target != "" {
			in.Mode = syscall.S_IFLNK | 0o777
			in.Size = uint64(len(obj.Target))
			b.post = append(b.post, mutation{kind: mSymlink, ino: in.Ino, name: obj.Target})
		}
		if p.Mode&syscall.S_ISGID != 0 {
			// BSD group semantics of a setgid directory. A file that
			// would run with a group its creator is not in loses setgid
			// (without group-execute, setgid marks mandatory locking and
			// stays), as inode_init_owner does.
			in.Gid = p.Gid
			const sgidExec = syscall.S_ISGID | syscall.S_IXGRP
			if in.IsDir() {
				in.Mode |= syscall.S_ISGID
			} else if in.Mode&sgidExec == sgidExec && !c.inGroup(p.Gid) && c.Uid != 0 {
				in.Mode &^= syscall.S_ISGID
			}
		}
		if in.IsDir() {
			in.Nlink = 2
			in.Parent = parent
			if p.Nlink >= maxLinks {
				return nil, ErrTooManyLinks
			}
			p.Nlink++
		}
		p.Mtime, p.Ctime = ts, ts
		b.t.putDirent(Dirent{Parent: parent, Name: name, Ino: in.Ino, Type: in.Mode & syscall.S_IFMT})
		b.put(in)
		b.put(p)
		b.refs = append(b.refs, in.Ino)
		made = in
		return b.txn(), nil
	})
	if err != nil {
		return Inode{}, err
	}
	return made, nil
}

// Link makes name in parent another name of ino, taking one reference.
func (e *Engine) Link(ctx context.Context, ino, parent Ino, name string) (Inode, error) {
	if err := validName(name); err != nil {
		return Inode{}, err
	}
	var out Inode
	_, err := e.run(ctx, maxMetaPayload, nil, func() (*txn, error) {
		b := e.newBuilder(OpLink, ino)
		p, err := b.dir(parent)
		if err != nil {
			return nil, err
		}
		in, ok := b.get(ino)
		if !ok {
			return nil, ErrNotExist
		}
		if in.IsDir() {
			return nil, ErrPerm
		}
		if in.Nlink == 0 {
			return nil, ErrNotExist
		}
		if in.Nlink >= maxLinks {
			return nil, ErrTooManyLinks
		}
		if _, ok := e.st.lookup(parent, name); ok {
			return nil, ErrExist
		}
		if err := e.quotaMoveLocked(ino, false, parent); err != nil {
			return nil, err
		}
		ts := now()
		in.Nlink++
		in.Ctime = ts
		p.Mtime, p.Ctime = ts, ts
		b.t.putDirent(Dirent{Parent: parent, Name: name, Ino: ino, Type: in.Mode & syscall.S_IFMT})
		b.put(in)
		b.put(p)
		b.refs = append(b.refs, in.Ino)
		out = in
		return b.txn(), nil
	})
	return out, err
}

// Unlink removes name (not a directory) from parent.
func (e *Engine) Unlink(ctx context.Context, parent Ino, name string) error {
	return e.remove(ctx, parent, name, false)
}

// Rmdir removes the empty directory name from parent.
func (e *Engine) Rmdir(ctx context.Context, parent Ino, name string) error {
	return e.remove(ctx, parent, name, true)
}

func (e *Engine) remove(ctx context.Context, parent Ino, name string, dir bool) error {
	if len(name) > MaxNameLen {
		return ErrNameTooLong
	}
	op := OpUnlink
	if dir {
		op = OpRmdir
	}
	_, err := e.run(ctx, maxMetaPayload, nil, func() (*txn, error) {
		b := e.newBuilder(op, parent)
		p, err := b.dir(parent)
		if err != nil {
			return nil, err
		}
		d, ok := e.st.lookup(parent, name)
		if !ok {
			return nil, ErrNotExist
		}
		in, ok := b.get(d.Ino)
		if !ok {
			return nil, ErrNotExist
		}
		if dir {
			if !in.IsDir() {
				return nil, ErrNotDir
			}
			if !e.st.dirEmpty(in.Ino) {
				return nil, ErrNotEmpty
			}
			p.Nlink--
		} else if in.IsDir() {
			return nil, ErrIsDir
		}
		ts := now()
		p.Mtime, p.Ctime = ts, ts
		b.t.delDirent(parent, name)
		b.put(p)
		b.unlinked(in, ts)
		return b.txn(), nil
	})
	return err
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = 1 << 0
	RenameExchange  = 1 << 1
)

// Rename moves oldName in oldParent to newName in newParent.
func (e *Engine) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error {
	if err := validName(newName); err != nil {
		return err
	}
	if len(oldName) > MaxNameLen {
		return ErrNameTooLong
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return ErrInvalid
	}
	_, err := e.run(ctx, maxMetaPayload, nil, func() (*txn, error) {
		return e.buildRename(oldParent, oldName, newParent, newName, flags)
	})
	return err
}

func (e *Engine) buildRename(oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) (*txn, error) {
	b := e.newBuilder(OpRename, oldParent)
	if _, err := b.dir(oldParent); err != nil {
		return nil, err
	}
	if _, err := b.dir(newParent); err != nil {
		return nil, err
	}
	sd, ok := e.st.lookup(oldParent, oldName)
	if !ok {
		return nil, ErrNotExist
	}
	src, ok := b.get(sd.Ino)
	if !ok {
		return nil, ErrNotExist
	}
	dd, dstExists := e.st.lookup(newParent, newName)
	if oldParent == newParent && oldName == newName {
		if flags&RenameNoReplace != 0 {
			return nil, ErrExist
		}
		return b.txn(), nil // nothing to do
	}
	if src.IsDir() && e.isAncestorLocked(src.Ino, newParent) {
		return nil, ErrInvalid // a directory cannot move into itself
	}
	if err := e.quotaMoveLocked(src.Ino, src.IsDir(), newParent); err != nil {
		return nil, err
	}
	if err := e.quotaTargetLocked(newParent, newName, dd.Ino, dstExists, src.IsDir()); err != nil {
		return nil, err
	}
	if flags&RenameExchange != 0 && dstExists {
		if dst, ok := b.get(dd.Ino); ok {
			if err := e.quotaMoveLocked(dst.Ino, dst.IsDir(), oldParent); err != nil {
				return nil, err
			}
		}
	}
	ts := now()
	touchParents := func() {
		for _, pi := range []Ino{oldParent, newParent} {
			p, _ := b.get(pi)
			p.Mtime, p.Ctime = ts, ts
			b.put(p)
		}
	}
	// moveDir re-parents a directory and fixes the parents' link counts.
	moveDir := func(in Inode, from, to Ino) Inode {
		if !in.IsDir() || from == to {
			return in
		}
		in.Parent = to
		pf, _ := b.get(from)
		pf.Nlink--
		b.put(pf)
		pt, _ := b.get(to)
		pt.Nlink++
		b.put(pt)
		return in
	}

	if flags&RenameExchange != 0 {
		if !dstExists {
			return nil, ErrNotExist
		}
		dst, ok := b.get(dd.Ino)
		if !ok {
			return nil, ErrNotExist
		}
		if dst.IsDir() && e.isAncestorLocked(dst.Ino, oldParent) {
			return nil, ErrInvalid
		}
		b.t.putDirent(Dirent{Parent: oldParent, Name: oldName, Ino: dst.Ino, Type: dst.Mode & syscall.S_IFMT})
		b.t.putDirent(Dirent{Parent: newParent, Name: newName, Ino: src.Ino, Type: src.Mode & syscall.S_IFMT})
		src.Ctime, dst.Ctime = ts, ts
		src = moveDir(src, oldParent, newParent)
		b.put(src)
		dst, _ = b.get(dst.Ino)
		dst.Ctime = ts
		dst = moveDir(dst, newParent, oldParent)
		b.put(dst)
		touchParents()
		return b.txn(), nil
	}

	if dstExists {
		if flags&RenameNoReplace != 0 {
			return nil, ErrExist
		}
		if dd.Ino == src.Ino {
			return b.txn(), nil // two names of one file: POSIX says do nothing
		}
		dst, ok := b.get(dd.Ino)
		if !ok {
			return nil, ErrNotExist
		}
		switch {
		case src.IsDir() && !dst.IsDir():
			return nil, ErrNotDir
		case !src.IsDir() && dst.IsDir():
			return nil, ErrIsDir
		case dst.IsDir() && !e.st.dirEmpty(dst.Ino):
			return nil, ErrNotEmpty
		}
		if dst.IsDir() {
			np, _ := b.get(newParent)
			np.Nlink--
			b.put(np)
		}
		b.unlinked(dst, ts)
	}
	b.t.delDirent(oldParent, oldName)
	b.t.putDirent(Dirent{Parent: newParent, Name: newName, Ino: src.Ino, Type: src.Mode & syscall.S_IFMT})
	src, _ = b.get(src.Ino)
	src.Ctime = ts
	src = moveDir(src, oldParent, newParent)
	b.put(src)
	touchParents()
	return b.txn(), nil
}

// isAncestorLocked reports whether directory a is dir or one of its ancestors.
func (e *Engine) isAncestorLocked(a, dir Ino) bool {
	for i := 0; i < 1<<20; i++ {
		if dir == a {
			return true
		}
		in, ok := e.st.inode(dir)
		if !ok || dir == RootIno || in.Parent == 0 || in.Parent == dir {
			return false
		}
		dir = in.Parent
	}
	return false
}

// SetAttr changes attributes; a size change truncates or extends.
func (e *Engine) SetAttr(ctx context.Context, ino Ino, sa SetAttr) (Inode, error) {
	var out Inode
	_, err := e.run(ctx, maxMetaPayload, nil, func() (*txn, error) {
		b := e.newBuilder(OpSetattr, ino)
		in, ok := b.get(ino)
		if !ok {
			return nil, ErrNotExist
		}
		ts := now()
		if sa.Size != nil {
			size := *sa.Size
			switch {
			case in.IsDir():
				return nil, ErrIsDir
			case !in.IsReg():
				return nil, ErrInvalid
			case size > MaxFileSize:
				return nil, ErrTooBig
			}
			if size < in.Size {
				if f := e.zeroNeedsLocked(ino, size); f != nil {
					return nil, &errNeedFetch{ino: ino, blks: f}
				}
			}
			if err := e.quotaGrowLocked(ino, in.Size, size); err != nil {
				return nil, err
			}
			b.t.add(mutation{kind: mTruncate, ino: ino, off: size})
			b.t.off = size
			if size != in.Size {
				in.Mtime = ts
			}
			in.Size = size
		}
		if sa.Mode != nil {
			in.Mode = in.Mode&syscall.S_IFMT | *sa.Mode&0o7777
		}
		if sa.Uid != nil || sa.Gid != nil {
			if sa.Uid != nil {
				in.Uid = *sa.Uid
			}
			if sa.Gid != nil {
				in.Gid = *sa.Gid
			}
			if !in.IsDir() && sa.Mode == nil {
				in.Mode = killSuid(in.Mode)
			}
		}
		if sa.KillSuidGid && !in.IsDir() {
			in.Mode = killSuid(in.Mode)
		}
		if sa.Atime != nil {
			in.Atime = *sa.Atime
		}
		if sa.Mtime != nil {
			in.Mtime = *sa.Mtime
		}
		in.Ctime = ts
		if sa.Ctime != nil {
			in.Ctime = *sa.Ctime
		}
		b.put(in)
		out = in
		return b.txn(), nil
	})
	if err != nil {
		return Inode{}, err
	}
	e.mu.Lock()
	if cur, ok := e.st.inode(ino); ok {
		out = cur // Blocks after a truncate
	}
	e.mu.Unlock()
	return out, nil
}

// Readlink returns a symlink's target.
func (e *Engine) Readlink(ino Ino) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.st.inode(ino)
	if !ok {
		return "", ErrNotExist
	}
	if !in.IsSymlink() {
		return "", ErrInvalid
	}
	s, ok := e.st.symlinks.Get(Symlink{Ino: ino})
	if !ok {
		return "", ErrNotExist
	}
	return s.Target, nil
}

// Ref records that the filesystem layer holds n more references to ino
// (kernel lookups, open files); an unlinked object lives until the last
// one goes.
func (e *Engine) Ref(ino Ino, n int32) {
	e.mu.Lock()
	e.refs[ino] += n
	e.mu.Unlock()
}

// Unref drops n references and deletes the object if it was unlinked and
// nothing refers to it any more. The deletion is not logged: recovery
// deletes every unlinked object, as no reference survives a restart.
func (e *Engine) Unref(ino Ino, n int32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.refs[ino] - n
	if r > 0 {
		e.refs[ino] = r
		return
	}
	delete(e.refs, ino)
	if in, ok := e.st.inode(ino); ok && in.Nlink == 0 && ino != RootIno {
		e.deleteObjectLocked(ino)
	}
}
