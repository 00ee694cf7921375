package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/cachelayer"
)

// errnoTable maps the engine's errors to errno values.
var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	// A failed log is EIO whatever the device said (a log device's ENOSPC
	// is not the filesystem being full).
	{cachelayer.ErrLog, syscall.EIO},
	{cachelayer.ErrNotExist, syscall.ENOENT},
	{cachelayer.ErrExist, syscall.EEXIST},
	{cachelayer.ErrNotDir, syscall.ENOTDIR},
	{cachelayer.ErrIsDir, syscall.EISDIR},
	{cachelayer.ErrNotEmpty, syscall.ENOTEMPTY},
	{cachelayer.ErrInvalid, syscall.EINVAL},
	{cachelayer.ErrNameTooLong, syscall.ENAMETOOLONG},
	{cachelayer.ErrNoAttr, syscall.ENODATA},
	{cachelayer.ErrRange, syscall.ERANGE},
	{cachelayer.ErrTooBig, syscall.EFBIG},
	{cachelayer.ErrNoSpace, syscall.ENOSPC},
	{cachelayer.ErrNotSupp, syscall.EOPNOTSUPP},
	{cachelayer.ErrNoData, syscall.ENXIO},
	{cachelayer.ErrTooManyLinks, syscall.EMLINK},
	{cachelayer.ErrPerm, syscall.EPERM},
	{cachelayer.ErrQuota, syscall.EDQUOT},
	{cachelayer.ErrCrossQuota, syscall.EXDEV},
	{context.Canceled, syscall.EINTR},
	{context.DeadlineExceeded, syscall.EINTR},
}

// toStatus maps an engine error to a FUSE status. It unwraps, so a wrapped
// ENOSPC from the backend stays ENOSPC; anything unknown is EIO and logged
// (never ENOSYS, which would make the kernel stop sending the op).
func (f *FS) toStatus(op string, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	for _, m := range errnoTable {
		if errors.Is(err, m.err) {
			return fuse.Status(m.errno)
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != syscall.ENOSYS {
		if errno == syscall.EIO {
			f.log.WithFields(logrus.Fields{"op": op}).WithError(err).Error("I/O error")
		}
		return fuse.Status(errno)
	}
	f.log.WithFields(logrus.Fields{"op": op}).WithError(err).Error("I/O error")
	return fuse.EIO
}

// cancelCtx is a context.Context over a FUSE request's cancel channel (the
// kernel interrupted the request), without allocating one per request.
type cancelCtx <-chan struct{}

func (c cancelCtx) Deadline() (deadline time.Time, ok bool) { return }
func (c cancelCtx) Done() <-chan struct{}                   { return c }
func (c cancelCtx) Value(key any) any                       { return nil }
func (c cancelCtx) Err() error {
	select {
	case <-c:
		return context.Canceled
	default:
		return nil
	}
}
