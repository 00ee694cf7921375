package logarea

import (
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/internal/device"
)

// probe is what Open learned about one device before changing anything.
type probe struct {
	dev   device.Device
	sb    superblock
	hasSB bool // sb was read from an intact slot
	meta  meta
	hasMD bool
	err   error // the device cannot be used (I/O error, damaged superblocks)
	scan  *scanResult
}

// Open opens the log on its replica devices, in any order.
//
// It first reads every superblock (the newer intact slot of the two) and
// refuses, changing nothing, a device that is not a dcache log
// (ErrNotFormatted), belongs to another filesystem or log (ErrForeign), has
// a format version this build does not know (ErrVersion) or is smaller than
// when it was formatted (ErrTooSmall). It then scans every replica from its
// tail, classifies how each chain ends (clean, torn tail: Warn, corruption:
// Error and not used for replay), picks the longest valid history, brings
// lagging replicas up to it and rewrites corrupt ones from it, reports the
// divergence, and starts a new epoch in the superblocks before anything is
// appended. It fails when fewer replicas than the write quorum are usable or
// no replica holds a valid history.
func Open(devs []device.Device, fsID [16]byte, cfg Config, log *logrus.Entry) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = discardLogger()
	}
	if len(devs) == 0 || len(devs) > maxReplicas {
		return nil, fmt.Errorf("%w: %d devices, want 1 to %d", ErrBadConfig, len(devs), maxReplicas)
	}

	// Phase 1: read and check, write nothing.
	probes := make([]*probe, len(devs))
	var refuse []error
	for i, d := range devs {
		p := &probe{dev: d}
		probes[i] = p
		if err := p.readSuperblock(); err != nil {
			if isRefusal(err) {
				refuse = append(refuse, err)
			}
			p.err = err
			continue
		}
		if p.sb.fsID != fsID {
			refuse = append(refuse, fmt.Errorf("%w: %s belongs to filesystem %x, not %x", ErrForeign, d.Name(), p.sb.fsID, fsID))
		}
		if uint64(d.Size()) < p.sb.devSize {
			refuse = append(refuse, fmt.Errorf("%w: %s has %d bytes, the log on it was formatted for %d", ErrTooSmall, d.Name(), d.Size(), p.sb.devSize))
		}
	}
	var ref *probe
	for _, p := range probes {
		if p.err == nil && ref == nil {
			ref = p
		}
	}
	if ref != nil {
		seen := map[uint32]string{}
		for _, p := range probes {
			if p.err != nil {
				continue
			}
			if p.sb.nonce != ref.sb.nonce || p.sb.replicaCount != ref.sb.replicaCount ||
				p.sb.areaOff != ref.sb.areaOff || p.sb.areaSize != ref.sb.areaSize {
				refuse = append(refuse, fmt.Errorf("%w: %s and %s are replicas of different logs", ErrForeign, p.dev.Name(), ref.dev.Name()))
			}
			if other, dup := seen[p.sb.replicaIndex]; dup {
				refuse = append(refuse, fmt.Errorf("%w: %s and %s both are replica %d", ErrBadConfig, other, p.dev.Name(), p.sb.replicaIndex))
			}
			seen[p.sb.replicaIndex] = p.dev.Name()
		}
		if n := int(ref.sb.replicaCount); len(devs) > n {
			refuse = append(refuse, fmt.Errorf("%w: %d devices given, the log has %d replicas", ErrBadConfig, len(devs), n))
		}
	}
	if len(refuse) > 0 {
		return nil, errors.Join(refuse...)
	}
	if ref == nil {
		return nil, noReplicaError(probes, "no replica has an intact superblock")
	}

	l := &Log{
		cfg:      cfg,
		log:      log,
		fsID:     fsID,
		nonce:    ref.sb.nonce,
		seed:     nonceSeed(ref.sb.nonce),
		areaSize: ref.sb.areaSize,
		bufSize:  int64(cfg.bufferSize()),
		need:     cfg.WriteQuorum.need(int(ref.sb.replicaCount)),
		replicas: make([]*replica, ref.sb.replicaCount),
	}
	for _, p := range probes {
		if p.err != nil {
			continue
		}
		l.replicas[p.sb.replicaIndex] = &replica{
			idx: int(p.sb.replicaIndex), dev: p.dev, name: p.dev.Name(), kind: device.KindOf(p.dev),
			area: area{dev: p.dev, off: int64(p.sb.areaOff), size: p.sb.areaSize}, sb: p.sb,
		}
	}

	// Phase 2: scan every replica, in parallel.
	var wg sync.WaitGroup
	for _, p := range probes {
		if p.err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := l.replicas[p.sb.replicaIndex]
			s := &scanner{r: newAreaReader(r.area), sb: p.sb, seed: l.seed, name: r.name}
			p.scan, p.err = s.scan(true)
		}()
	}
	wg.Wait()

	l.durableCh = make(chan struct{})
	l.wake = make(chan struct{}, 1)
	l.writerDone = make(chan struct{})
	if err := l.reconcile(probes); err != nil {
		return nil, err
	}
	l.cur = make([]byte, 0, l.bufSize)
	l.curPos, l.curFirst = l.head, l.nextLSN
	l.writtenLSN, l.durableLSN, l.syncIssued = l.nextLSN-1, l.nextLSN-1, l.nextLSN-1
	for _, r := range l.replicas {
		if r != nil && r.health == HealthOK {
			r.written, r.synced = l.nextLSN-1, l.nextLSN-1
		}
	}
	go l.writer()
	return l, nil
}

// readSuperblock reads both slots and keeps the newer intact one, and the
// newer intact metadata slot.
func (p *probe) readSuperblock() error {
	if p.dev.Size() < areaOffset {
		return fmt.Errorf("%w: %s has only %d bytes", ErrNotFormatted, p.dev.Name(), p.dev.Size())
	}
	var buf [sbSlotSize + sbEncodedSize]byte
	if _, err := p.dev.ReadAt(buf[:], 0); err != nil {
		return fmt.Errorf("logarea: read superblocks of %s: %w", p.dev.Name(), err)
	}
	var why []string
	empty, found := 0, false
	for slot := range 2 {
		sb, st, v, w := decodeSuperblock(buf[slot*sbSlotSize:])
		switch st {
		case slotEmpty:
			empty++
		case slotVersion:
			return fmt.Errorf("%w: %s has format version %d, this build knows %d", ErrVersion, p.dev.Name(), v, formatVersion)
		case slotDamaged:
			why = append(why, fmt.Sprintf("slot %d: %s", slot, w))
		case slotOK:
			if !found || sb.seq > p.sb.seq {
				p.sb = sb
			}
			found = true
		}
	}
	if empty == 2 {
		return fmt.Errorf("%w: %s has no log superblock", ErrNotFormatted, p.dev.Name())
	}
	p.hasSB = found
	if !found {
		return &CorruptionError{Device: p.dev.Name(), Offset: 0, Reason: fmt.Sprintf("both superblock slots damaged (%v)", why)}
	}
	var mb [metaSlotSize + metaEncSize]byte
	if _, err := p.dev.ReadAt(mb[:], metaOffset); err != nil {
		return fmt.Errorf("logarea: read metadata of %s: %w", p.dev.Name(), err)
	}
	for slot := range 2 {
		m, ok := decodeMeta(mb[slot*metaSlotSize:])
		if ok && m.nonce == p.sb.nonce && len(m.states) == int(p.sb.replicaCount) && (!p.hasMD || m.seq > p.meta.seq) {
			p.meta, p.hasMD = m, true
		}
	}
	return nil
}

func isRefusal(err error) bool {
	return errors.Is(err, ErrNotFormatted) || errors.Is(err, ErrVersion) || errors.Is(err, ErrForeign) || errors.Is(err, ErrTooSmall)
}

func noReplicaError(probes []*probe, why string) error {
	errs := []error{fmt.Errorf("%w: %s", ErrNoReplica, why)}
	for _, p := range probes {
		if p.err != nil {
			errs = append(errs, p.err)
		} else if p.scan != nil && p.scan.corrupt != nil {
			errs = append(errs, p.scan.corrupt)
		}
	}
	return errors.Join(errs...)
}

// reconcile chooses the history to keep, repairs the replicas that differ
// from it, and writes the new epoch into every usable replica.
func (l *Log) reconcile(probes []*probe) error {
	var newest *meta
	var maxEpoch uint32
	var tailLSN LSN
	var tailPos uint64
	for _, p := range probes {
		if !p.hasSB {
			continue
		}
		maxEpoch = max(maxEpoch, p.sb.epoch)
		if p.sb.tailLSN > tailLSN {
			tailLSN, tailPos = p.sb.tailLSN, p.sb.tailPos
		}
		if p.hasMD && (newest == nil || p.meta.seq > newest.seq) {
			newest = &p.meta
		}
	}
	if newest != nil {
		l.metaSeq = newest.seq
	}
	failedBefore := func(p *probe) bool {
		return newest != nil && newest.states[p.sb.replicaIndex] == stateFailed
	}

	// The replay source: the longest chain among replicas that scanned
	// without corruption, preferring those the metadata does not mark failed.
	var best *probe
	for _, trustMeta := range []bool{true, false} {
		for _, p := range probes {
			if p.err != nil || p.scan.end == endCorrupt || (trustMeta && failedBefore(p)) {
				continue
			}
			if best == nil || p.scan.endLSN > best.scan.endLSN {
				best = p
			}
		}
		if best != nil {
			break
		}
	}
	for _, p := range probes {
		if p.err != nil {
			l.log.WithError(p.err).WithField("replica", p.dev.Name()).Error("log replica unusable")
		} else if p.scan.corrupt != nil {
			l.log.WithError(p.scan.corrupt).WithField("replica", p.dev.Name()).Error("log replica corrupt: not used for replay, will be rewritten")
		}
	}
	if best == nil {
		return noReplicaError(probes, "no replica holds a valid log (see the errors that follow)")
	}
	usable := 0
	for _, p := range probes {
		if p.err == nil {
			usable++
		}
	}
	if usable < l.need {
		return fmt.Errorf("%w: %d of %d replicas usable, quorum %s needs %d: %w", ErrQuorumLost, usable, len(l.replicas), l.cfg.WriteQuorum, l.need, noReplicaError(probes, "too few replicas"))
	}

	// The kept history: from the newest tail any replica recorded to the end
	// of the best chain.
	bs := best.scan
	l.tailLSN, l.tailPos = tailLSN, tailPos
	l.nextLSN, l.head = tailLSN, tailPos
	if bs.endLSN > tailLSN {
		skip := int(tailLSN - bs.startLSN)
		l.tailPos = bs.starts[skip]
		l.nextLSN, l.head = bs.endLSN, bs.endPos
		l.index.reset(tailLSN, bs.starts[skip:])
	} else {
		l.index.reset(tailLSN, nil)
	}
	l.src = l.replicas[best.sb.replicaIndex]
	fields := logrus.Fields{"tail_lsn": l.tailLSN, "next_lsn": l.nextLSN, "source": l.src.name}
	if bs.end == endTorn {
		l.log.WithFields(fields).WithFields(logrus.Fields{
			"replica": best.dev.Name(), "offset": l.src.area.physical(bs.endPos), "lsn": bs.endLSN, "reason": bs.why,
		}).Warn("torn write at the end of the log: truncated there")
	}

	// Repair every other usable replica.
	for _, p := range probes {
		r := l.replicasByDev(p)
		if r != nil {
			r.health = HealthOK
		}
		if p.err != nil {
			if r != nil {
				r.health, r.lastErr = HealthFailed, p.err
			}
			continue
		}
		if p == best {
			continue
		}
		from, what := uint64(0), ""
		switch s := p.scan; {
		case s.end == endCorrupt || failedBefore(p):
			from, what = l.tailPos, "rebuilt"
		case s.endLSN < l.nextLSN && s.endLSN > l.tailLSN:
			from, what = s.endPos, "caught up"
		case s.endLSN < l.nextLSN:
			from, what = l.tailPos, "caught up"
		}
		if what == "" {
			continue
		}
		r.health = HealthLagging
		l.log.WithFields(fields).WithFields(logrus.Fields{
			"replica": r.name, "replica_end_lsn": p.scan.endLSN, "bytes": l.head - from, "action": what,
		}).Warn("log replicas diverge: repairing replica from the source")
		if err := l.copyRange(l.src, r, from, l.head); err != nil {
			if errors.Is(err, errSourceRead) {
				return err
			}
			r.health, r.lastErr = HealthFailed, err
			l.log.WithError(err).WithField("replica", r.name).Error("repairing log replica failed")
			continue
		}
		r.health, r.repaired = HealthOK, what
	}
	healthy := len(l.healthyLocked())
	if healthy < l.need {
		return fmt.Errorf("%w: %d of %d replicas healthy after repair, quorum %s needs %d", ErrQuorumLost, healthy, len(l.replicas), l.cfg.WriteQuorum, l.need)
	}

	// Start a new epoch: records appended from here on carry it, and
	// anything an earlier run left past the end of the kept history is
	// rejected by the next scan.
	l.epoch, l.epochStart = maxEpoch+1, l.nextLSN
	if err := l.writeMetaAll(true); err != nil {
		return err
	}
	l.sbMu.Lock()
	err := l.writeSuperblocks(l.tailLSN, l.tailPos, l.nextLSN, l.head, 0)
	l.sbMu.Unlock()
	if err != nil {
		return err
	}
	l.log.WithFields(fields).WithFields(logrus.Fields{
		"replicas": healthy, "of": len(l.replicas), "records": uint64(l.nextLSN - l.tailLSN),
		"bytes": l.head - l.tailPos, "epoch": l.epoch, "quorum": l.cfg.WriteQuorum.String(),
	}).Info("log opened")
	return nil
}

func (l *Log) replicasByDev(p *probe) *replica {
	for _, r := range l.replicas {
		if r != nil && r.dev == p.dev {
			return r
		}
	}
	return nil
}

var errSourceRead = errors.New("logarea: reading the repair source failed")

// copyRange copies the records in [from, to) of src's area to dst's, and
// syncs dst.
func (l *Log) copyRange(src, dst *replica, from, to uint64) error {
	buf := make([]byte, min(to-from, readChunk))
	for pos := from; pos < to; {
		n := min(uint64(len(buf)), to-pos)
		if err := src.area.readAt(buf[:n], pos); err != nil {
			return fmt.Errorf("%w: %s: %w", errSourceRead, src.name, err)
		}
		if err := dst.writeRecords(buf[:n], pos); err != nil {
			return err
		}
		pos += n
	}
	return dst.sync()
}
