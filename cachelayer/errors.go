package cachelayer

import "errors"

// Errors returned by the engine. The filesystem layer maps each to an errno;
// anything else is an I/O error.
var (
	ErrNotExist     = errors.New("cachelayer: no such object")                         // ENOENT
	ErrExist        = errors.New("cachelayer: object exists")                          // EEXIST
	ErrNotDir       = errors.New("cachelayer: not a directory")                        // ENOTDIR
	ErrIsDir        = errors.New("cachelayer: is a directory")                         // EISDIR
	ErrNotEmpty     = errors.New("cachelayer: directory not empty")                    // ENOTEMPTY
	ErrInvalid      = errors.New("cachelayer: invalid argument")                       // EINVAL
	ErrNameTooLong  = errors.New("cachelayer: name too long")                          // ENAMETOOLONG
	ErrNoAttr       = errors.New("cachelayer: no such attribute")                      // ENODATA
	ErrRange        = errors.New("cachelayer: result too large")                       // ERANGE
	ErrTooBig       = errors.New("cachelayer: file too large")                         // EFBIG
	ErrNoSpace      = errors.New("cachelayer: no space left")                          // ENOSPC
	ErrNotSupp      = errors.New("cachelayer: operation not supported")                // EOPNOTSUPP
	ErrNoData       = errors.New("cachelayer: no data past offset")                    // ENXIO
	ErrTooManyLinks = errors.New("cachelayer: too many links")                         // EMLINK
	ErrPerm         = errors.New("cachelayer: operation not permitted")                // EPERM
	ErrClosed       = errors.New("cachelayer: engine closed")                          // EIO
	ErrLog          = errors.New("cachelayer: write-ahead log failed")                 // EIO
	ErrQuota        = errors.New("cachelayer: directory quota exceeded")               // EDQUOT
	ErrCrossQuota   = errors.New("cachelayer: rename or link across a quota boundary") // EXDEV
)
