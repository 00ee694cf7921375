package fs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dcache/dcache/internal/inflight"
	"github.com/dcache/dcache/internal/metrics"
)

// ReportVersion is the version of the stats.json layout; keys are only
// ever added within one version.
const ReportVersion = 1

// Report is the content of stats.json: every figure of stats, with the key
// names documented in README.md.
type Report struct {
	Version       int       `json:"version"`
	Time          time.Time `json:"time"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Windows       struct {
		SinceMount Window `json:"since_mount"`
		LastHour   Window `json:"last_hour"`
		Last5m     Window `json:"last_5m"`
	} `json:"windows"`
	Cache    CacheReport    `json:"cache"`
	Destage  DestageReport  `json:"destage"`
	Log      LogReport      `json:"log"`
	Backend  BackendReport  `json:"backend"`
	Prefetch PrefetchReport `json:"prefetch"`
	Quotas   QuotaReport    `json:"quotas"`
	Throttle ThrottleReport `json:"throttle"`
	Inflight InflightReport `json:"inflight"`
}

// Window is what happened during a time window.
type Window struct {
	Seconds               float64             `json:"seconds"`
	Operations            map[string]OpReport `json:"operations"`
	BytesWritten          int64               `json:"bytes_written"`
	BytesRead             int64               `json:"bytes_read"`
	ReadHits              int64               `json:"read_hits"`
	ReadMisses            int64               `json:"read_misses"`
	ReadHitRatio          float64             `json:"read_hit_ratio"`
	Evictions             int64               `json:"evictions"`
	DestageBytes          int64               `json:"destage_bytes"`
	DestageBytesPerSecond float64             `json:"destage_bytes_per_second"`
	DestageRounds         int64               `json:"destage_rounds"`
	DestageFailures       int64               `json:"destage_failures"`
	ThrottledWrites       int64               `json:"throttled_writes"`
	ThrottleDelaySeconds  float64             `json:"throttle_delay_seconds"`
}

// OpReport is one FUSE request kind in a window.
type OpReport struct {
	Count        int64   `json:"count"`
	Bytes        int64   `json:"bytes"`
	LatencyP50Us float64 `json:"latency_p50_us"`
	LatencyP99Us float64 `json:"latency_p99_us"`
	LatencyMaxUs float64 `json:"latency_max_us"`
}

// CacheReport is the page cache.
type CacheReport struct {
	SizeBytes         int64   `json:"size_bytes"`
	UsedBytes         int64   `json:"used_bytes"`
	DirtyBytes        int64   `json:"dirty_bytes"`
	CleanBytes        int64   `json:"clean_bytes"`
	Objects           int     `json:"objects"`
	ReadHitsTotal     int64   `json:"read_hits_total"`
	ReadMissesTotal   int64   `json:"read_misses_total"`
	ReadHitRatio      float64 `json:"read_hit_ratio"`
	EvictionsTotal    int64   `json:"evictions_total"`
	BytesWrittenTotal int64   `json:"bytes_written_total"`
	BytesReadTotal    int64   `json:"bytes_read_total"`
}

// DestageReport is the flusher.
type DestageReport struct {
	QueuedBytes           int64   `json:"queued_bytes"`
	InProgress            bool    `json:"in_progress"`
	InProgressBytes       int64   `json:"in_progress_bytes"`
	InProgressDoneBytes   int64   `json:"in_progress_done_bytes"`
	BytesTotal            int64   `json:"bytes_total"`
	RoundsTotal           int64   `json:"rounds_total"`
	FailuresTotal         int64   `json:"failures_total"`
	BytesPerSecond        float64 `json:"bytes_per_second"`
	OldestDirtyAgeSeconds float64 `json:"oldest_dirty_age_seconds"`
	CheckpointsTotal      int64   `json:"checkpoints_total"`
	DeltasTotal           int64   `json:"deltas_total"`
	LastError             string  `json:"last_error"`
}

// LogReport is the write-ahead log.
type LogReport struct {
	TailLSN         uint64          `json:"tail_lsn"`
	LastLSN         uint64          `json:"last_lsn"`
	DurableLSN      uint64          `json:"durable_lsn"`
	AreaBytes       int64           `json:"area_bytes"`
	UsedBytes       int64           `json:"used_bytes"`
	FreeBytes       int64           `json:"free_bytes"`
	RecordsTotal    int64           `json:"records_total"`
	SyncRoundsTotal int64           `json:"sync_rounds_total"`
	GroupCommitAvg  float64         `json:"group_commit_avg"`
	GroupCommitMax  int64           `json:"group_commit_max"`
	Quorum          string          `json:"quorum"`
	Healthy         int             `json:"healthy"`
	Error           string          `json:"error"`
	Replicas        []ReplicaReport `json:"replicas"`
}

// ReplicaReport is one log replica.
type ReplicaReport struct {
	Index             int    `json:"index"`
	Name              string `json:"name"`
	Kind              string `json:"kind"`
	Health            string `json:"health"`
	UsedBytes         int64  `json:"used_bytes"`
	FreeBytes         int64  `json:"free_bytes"`
	HeadLSN           uint64 `json:"head_lsn"`
	TailLSN           uint64 `json:"tail_lsn"`
	DurableLSN        uint64 `json:"durable_lsn"`
	WritesTotal       int64  `json:"writes_total"`
	SyncsTotal        int64  `json:"syncs_total"`
	BytesWrittenTotal int64  `json:"bytes_written_total"`
	LastError         string `json:"last_error"`
}

// BackendReport is the segment store and its cleaner.
type BackendReport struct {
	Segments               int     `json:"segments"`
	SegmentBytes           int64   `json:"segment_bytes"`
	LiveBytes              int64   `json:"live_bytes"`
	LiveFraction           float64 `json:"live_fraction"`
	CleanThreshold         float64 `json:"clean_threshold"`
	SegmentsBelowThreshold int     `json:"segments_below_threshold"`
	CleaningRoundsTotal    int64   `json:"cleaning_rounds_total"`
	CleanedSegmentsTotal   int64   `json:"cleaned_segments_total"`
	CleanedBytesTotal      int64   `json:"cleaned_bytes_total"`
	FreedBytesTotal        int64   `json:"freed_bytes_total"`
}

// PrefetchReport is the read-ahead from the backend.
type PrefetchReport struct {
	IssuedBytesTotal int64 `json:"issued_bytes_total"`
	HitsTotal        int64 `json:"hits_total"`
	WasteTotal       int64 `json:"waste_total"`
	DroppedTotal     int64 `json:"dropped_total"`
}

// QuotaReport is the dirty budget and the directory quotas.
type QuotaReport struct {
	DirtyBytesLimit int64            `json:"dirty_bytes_limit"`
	DirtyBytesUsed  int64            `json:"dirty_bytes_used"`
	Directories     []DirQuotaReport `json:"directories"`
}

// DirQuotaReport is one directory quota.
type DirQuotaReport struct {
	Path        string `json:"path"`
	Active      bool   `json:"active"`
	BytesLimit  uint64 `json:"bytes_limit"`
	BytesUsed   uint64 `json:"bytes_used"`
	InodesLimit uint64 `json:"inodes_limit"`
	InodesUsed  uint64 `json:"inodes_used"`
}

// ThrottleReport is the writers delayed by the dirty budget.
type ThrottleReport struct {
	WritersDelayedTotal int64   `json:"writers_delayed_total"`
	DelaySecondsTotal   float64 `json:"delay_seconds_total"`
}

// InflightReport is the in-flight request table.
type InflightReport struct {
	HungThresholdSeconds float64 `json:"hung_threshold_seconds"`
	Hung                 int     `json:"hung"`
	UntrackedTotal       int64   `json:"untracked_total"`
}

// sample is the cumulative counters at one moment; windows are
// differences of samples.
type sample struct {
	ops                                    [numOps]opSample
	written, read, hits, misses, evictions int64
	destBytes, destRounds, destErrs        int64
	throttled, throttleNs                  int64
}

type opSample struct {
	count, bytes int64
	lat          metrics.HistSnapshot
}

func (f *FS) takeSample() sample {
	var s sample
	for i := range s.ops {
		h := f.stats.snapshot(op(i))
		s.ops[i] = opSample{count: h.Count, bytes: h.Amount, lat: h}
	}
	es := f.eng.Stats()
	s.written, s.read = es.BytesWritten.Load(), es.BytesRead.Load()
	s.hits, s.misses, s.evictions = es.ReadHits.Load(), es.ReadMisses.Load(), es.Evictions.Load()
	s.destBytes, s.destRounds, s.destErrs = es.DestageBytes.Load(), es.DestageRounds.Load(), es.DestageErrors.Load()
	s.throttled, s.throttleNs = es.ThrottleWaits.Load(), es.ThrottleWaitNs.Load()
	return s
}

// window renders the difference between two samples taken secs apart.
func window(cur, old sample, secs float64, sinceMount bool) Window {
	w := Window{Seconds: secs, Operations: make(map[string]OpReport, numOps)}
	for i := range cur.ops {
		c, o := cur.ops[i], old.ops[i]
		h := c.lat
		if !sinceMount {
			h = c.lat.Sub(o.lat)
		}
		w.Operations[op(i).String()] = OpReport{
			Count: c.count - o.count, Bytes: c.bytes - o.bytes,
			LatencyP50Us: us(h.Quantile(0.5)), LatencyP99Us: us(h.Quantile(0.99)), LatencyMaxUs: us(h.Max),
		}
	}
	w.BytesWritten, w.BytesRead = cur.written-old.written, cur.read-old.read
	w.ReadHits, w.ReadMisses = cur.hits-old.hits, cur.misses-old.misses
	w.ReadHitRatio = ratio(w.ReadHits, w.ReadHits+w.ReadMisses)
	w.Evictions = cur.evictions - old.evictions
	w.DestageBytes, w.DestageRounds, w.DestageFailures = cur.destBytes-old.destBytes, cur.destRounds-old.destRounds, cur.destErrs-old.destErrs
	if secs > 0 {
		w.DestageBytesPerSecond = float64(w.DestageBytes) / secs
	}
	w.ThrottledWrites = cur.throttled - old.throttled
	w.ThrottleDelaySeconds = float64(cur.throttleNs-old.throttleNs) / 1e9
	return w
}

func us(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Sample rings: every 10 s for five minutes, every minute for an hour.
const (
	shortEvery = 10 * time.Second
	longEvery  = time.Minute
)

// windows keeps the samples the windows are computed from.
type windows struct {
	zero  sample // at mount
	short *metrics.Ring[sample]
	long  *metrics.Ring[sample]
}

func newWindows() *windows {
	return &windows{
		short: metrics.NewRing[sample](shortEvery, 5*time.Minute),
		long:  metrics.NewRing[sample](longEvery, time.Hour),
	}
}

// Report gathers every figure now.
func (f *FS) Report() Report { return *f.report() }

func (f *FS) report() *Report {
	now := time.Now()
	r := &Report{Version: ReportVersion, Time: now, UptimeSeconds: now.Sub(f.started).Seconds()}
	cur := f.takeSample()
	r.Windows.SinceMount = window(cur, f.win.zero, r.UptimeSeconds, true)
	r.Windows.LastHour = f.windowOf(f.win.long, cur, now, time.Hour)
	r.Windows.Last5m = f.windowOf(f.win.short, cur, now, 5*time.Minute)

	info := f.eng.Info()
	es := f.eng.Stats()
	r.Cache = CacheReport{
		SizeBytes: info.PoolBytes, UsedBytes: info.DirtyBytes + info.CleanBytes,
		DirtyBytes: info.DirtyBytes, CleanBytes: info.CleanBytes, Objects: info.Objects,
		ReadHitsTotal: cur.hits, ReadMissesTotal: cur.misses, ReadHitRatio: ratio(cur.hits, cur.hits+cur.misses),
		EvictionsTotal: cur.evictions, BytesWrittenTotal: cur.written, BytesReadTotal: cur.read,
	}
	pr := f.eng.Progress()
	r.Destage = DestageReport{
		QueuedBytes: info.DirtyBytes, InProgress: pr.Running, InProgressBytes: pr.QueuedBytes, InProgressDoneBytes: pr.DoneBytes,
		BytesTotal: cur.destBytes, RoundsTotal: cur.destRounds, FailuresTotal: cur.destErrs,
		BytesPerSecond:   r.Windows.Last5m.DestageBytesPerSecond,
		CheckpointsTotal: es.Checkpoints.Load(), DeltasTotal: es.Deltas.Load(),
	}
	if !info.OldestDirtyAt.IsZero() {
		r.Destage.OldestDirtyAgeSeconds = now.Sub(info.OldestDirtyAt).Seconds()
	}
	if info.LastError != nil {
		r.Destage.LastError = info.LastError.Error()
	}
	if ls, ok := f.eng.LogStats(); ok {
		r.Log = LogReport{
			TailLSN: uint64(ls.TailLSN), LastLSN: uint64(ls.LastLSN), DurableLSN: uint64(ls.DurableLSN),
			AreaBytes: ls.AreaBytes, UsedBytes: ls.UsedBytes, FreeBytes: ls.FreeBytes,
			RecordsTotal: ls.Records, SyncRoundsTotal: ls.SyncRounds, GroupCommitAvg: ls.AvgGroup, GroupCommitMax: ls.MaxGroup,
			Quorum: fmt.Sprint(ls.Quorum), Healthy: ls.Healthy, Error: ls.Error, Replicas: []ReplicaReport{},
		}
		for _, rs := range ls.Replicas {
			r.Log.Replicas = append(r.Log.Replicas, ReplicaReport{
				Index: rs.Index, Name: rs.Name, Kind: rs.Kind, Health: fmt.Sprint(rs.Health),
				UsedBytes: rs.UsedBytes, FreeBytes: rs.FreeBytes,
				HeadLSN: uint64(rs.HeadLSN), TailLSN: uint64(rs.TailLSN), DurableLSN: uint64(rs.DurableLSN),
				WritesTotal: rs.Writes, SyncsTotal: rs.Syncs, BytesWrittenTotal: rs.BytesWritten, LastError: rs.LastError,
			})
		}
	}
	ci := f.eng.CleanInfo()
	r.Backend = BackendReport{
		Segments: ci.Segments, SegmentBytes: ci.SegmentBytes, LiveBytes: ci.LiveBytes, LiveFraction: ci.LiveFraction,
		CleanThreshold: ci.Threshold, SegmentsBelowThreshold: ci.BelowThreshold, CleaningRoundsTotal: ci.Rounds,
		CleanedSegmentsTotal: ci.CleanedSegments, CleanedBytesTotal: ci.CleanedBytes, FreedBytesTotal: ci.FreedBytes,
	}
	r.Prefetch = PrefetchReport{IssuedBytesTotal: es.PrefetchBytes.Load(), HitsTotal: es.PrefetchHits.Load(),
		WasteTotal: es.PrefetchWaste.Load(), DroppedTotal: es.PrefetchDropped.Load()}
	r.Quotas = QuotaReport{DirtyBytesLimit: info.DirtyBudget, DirtyBytesUsed: info.DirtyBytes, Directories: []DirQuotaReport{}}
	for _, q := range f.eng.Quotas() {
		r.Quotas.Directories = append(r.Quotas.Directories, DirQuotaReport{Path: q.Path, Active: q.Root != 0,
			BytesLimit: q.Bytes, BytesUsed: q.UsedBytes, InodesLimit: q.Inodes, InodesUsed: q.UsedInodes})
	}
	r.Throttle = ThrottleReport{WritersDelayedTotal: cur.throttled, DelaySecondsTotal: float64(cur.throttleNs) / 1e9}
	r.Inflight = InflightReport{
		HungThresholdSeconds: f.opts.Stats.HungThreshold.Seconds(),
		Hung:                 len(f.stats.tab.Older(now, f.opts.Stats.HungThreshold, false)),
		UntrackedTotal:       f.stats.tab.Overflow(),
	}
	return r
}

// windowOf is the window of length d ending now, from ring's samples; a
// mount younger than d gives the figures since mount.
func (f *FS) windowOf(ring *metrics.Ring[sample], cur sample, now time.Time, d time.Duration) Window {
	old, at, ok := ring.Since(now, d)
	if !ok {
		return window(cur, f.win.zero, now.Sub(f.started).Seconds(), true)
	}
	return window(cur, old, now.Sub(at).Seconds(), false)
}

func (r *Report) json() []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return append(b, '\n')
}

// Text renders the report for a terminal: the stats file, and what dcache
// stats prints.
func (r *Report) Text() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "dcache statistics at %s, mounted %s ago\n", r.Time.Format(time.RFC3339), time.Duration(r.UptimeSeconds*1e9).Round(time.Second))
	section := func(name string) { fmt.Fprintf(&b, "\n%s\n", name) }
	tw := func() *tabwriter.Writer { return tabwriter.NewWriter(&b, 2, 8, 2, ' ', tabwriter.AlignRight) }

	section("operations (count, bytes, latency p50/p99/max)")
	w := tw()
	fmt.Fprintf(w, "op\tsince mount\tbytes\tp50\tp99\tmax\tlast hour\tp99\tlast 5m\tp99\t\n")
	names := make([]string, 0, len(r.Windows.SinceMount.Operations))
	for n, o := range r.Windows.SinceMount.Operations {
		if o.Count > 0 {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		m, h, f := r.Windows.SinceMount.Operations[n], r.Windows.LastHour.Operations[n], r.Windows.Last5m.Operations[n]
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t\n", n, m.Count, Bytes(m.Bytes),
			usText(m.LatencyP50Us), usText(m.LatencyP99Us), usText(m.LatencyMaxUs), h.Count, usText(h.LatencyP99Us), f.Count, usText(f.LatencyP99Us))
	}
	w.Flush()

	section("windows")
	w = tw()
	fmt.Fprintf(w, "\tsince mount\tlast hour\tlast 5m\t\n")
	ws := []Window{r.Windows.SinceMount, r.Windows.LastHour, r.Windows.Last5m}
	row := func(name string, fn func(Window) string) {
		fmt.Fprintf(w, "%s\t", name)
		for _, x := range ws {
			fmt.Fprintf(w, "%s\t", fn(x))
		}
		fmt.Fprintln(w)
	}
	row("written", func(x Window) string { return Bytes(x.BytesWritten) })
	row("read", func(x Window) string { return Bytes(x.BytesRead) })
	row("read hit ratio", func(x Window) string { return pct(x.ReadHitRatio) })
	row("evictions", func(x Window) string { return fmt.Sprint(x.Evictions) })
	row("destaged", func(x Window) string { return Bytes(x.DestageBytes) })
	row("destage rate", func(x Window) string { return Bytes(int64(x.DestageBytesPerSecond)) + "/s" })
	row("destage failures", func(x Window) string { return fmt.Sprint(x.DestageFailures) })
	row("writers delayed", func(x Window) string { return fmt.Sprint(x.ThrottledWrites) })
	row("total delay", func(x Window) string { return secs(x.ThrottleDelaySeconds) })
	w.Flush()

	c := r.Cache
	section("cache")
	fmt.Fprintf(&b, "  size %s, used %s (dirty %s, clean %s), %d objects\n", Bytes(c.SizeBytes), Bytes(c.UsedBytes), Bytes(c.DirtyBytes), Bytes(c.CleanBytes), c.Objects)
	fmt.Fprintf(&b, "  read hits %d, misses %d, hit ratio %s, evictions %d\n", c.ReadHitsTotal, c.ReadMissesTotal, pct(c.ReadHitRatio), c.EvictionsTotal)

	d := r.Destage
	section("destage")
	fmt.Fprintf(&b, "  queued %s, oldest dirty %s old\n", Bytes(d.QueuedBytes), secs(d.OldestDirtyAgeSeconds))
	if d.InProgress {
		fmt.Fprintf(&b, "  in progress: %s of %s appended\n", Bytes(d.InProgressDoneBytes), Bytes(d.InProgressBytes))
	} else {
		fmt.Fprintf(&b, "  in progress: none\n")
	}
	fmt.Fprintf(&b, "  destaged %s in %d rounds, %s/s over the last 5m, %d failures; %d checkpoints, %d deltas\n",
		Bytes(d.BytesTotal), d.RoundsTotal, Bytes(int64(d.BytesPerSecond)), d.FailuresTotal, d.CheckpointsTotal, d.DeltasTotal)
	if d.LastError != "" {
		fmt.Fprintf(&b, "  last error: %s\n", d.LastError)
	}

	section("log")
	fmt.Fprintf(&b, "%s", r.Log.text())

	be := r.Backend
	section("backend")
	fmt.Fprintf(&b, "  %d segments, %s, live %s (%s)\n", be.Segments, Bytes(be.SegmentBytes), Bytes(be.LiveBytes), pct(be.LiveFraction))
	if be.CleanThreshold > 0 {
		fmt.Fprintf(&b, "  cleaning below %s live: %d segments due; %d rounds freed %d segments (%s), rewrote %s\n", pct(be.CleanThreshold),
			be.SegmentsBelowThreshold, be.CleaningRoundsTotal, be.CleanedSegmentsTotal, Bytes(be.FreedBytesTotal), Bytes(be.CleanedBytesTotal))
	} else {
		fmt.Fprintf(&b, "  cleaning: off (backend.clean_threshold 0)\n")
	}

	section("quotas")
	fmt.Fprintf(&b, "  dirty data %s of %s\n", Bytes(r.Quotas.DirtyBytesUsed), Bytes(r.Quotas.DirtyBytesLimit))
	for _, q := range r.Quotas.Directories {
		state := ""
		if !q.Active {
			state = " (inactive: no such directory)"
		}
		fmt.Fprintf(&b, "  %s: %s of %s, %d of %d objects%s\n", q.Path, Bytes(int64(q.BytesUsed)), limit(q.BytesLimit, true), q.InodesUsed, q.InodesLimit, state)
	}

	section("throttling")
	fmt.Fprintf(&b, "  writers delayed %d, total delay %s\n", r.Throttle.WritersDelayedTotal, secs(r.Throttle.DelaySecondsTotal))

	section("prefetch")
	fmt.Fprintf(&b, "  issued %s, hits %d pages, waste %d pages, %d jobs dropped\n", Bytes(r.Prefetch.IssuedBytesTotal),
		r.Prefetch.HitsTotal, r.Prefetch.WasteTotal, r.Prefetch.DroppedTotal)

	section("in flight")
	fmt.Fprintf(&b, "  %d requests older than %s (see inflight); %d untracked\n", r.Inflight.Hung, secs(r.Inflight.HungThresholdSeconds), r.Inflight.UntrackedTotal)
	return b.Bytes()
}

// text renders the log's part, also the content of the log file.
func (l *LogReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  lsn tail %d, last %d, durable %d; %s of %s used, %s free\n", l.TailLSN, l.LastLSN, l.DurableLSN, Bytes(l.UsedBytes), Bytes(l.AreaBytes), Bytes(l.FreeBytes))
	fmt.Fprintf(&b, "  %d records, %d sync rounds, group commit avg %.1f max %d; quorum %s, %d healthy\n", l.RecordsTotal, l.SyncRoundsTotal, l.GroupCommitAvg, l.GroupCommitMax, l.Quorum, l.Healthy)
	if l.Error != "" {
		fmt.Fprintf(&b, "  failed: %s\n", l.Error)
	}
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  replica\thealth\tused\tfree\thead\ttail\tdurable\tsyncs\twritten\tdevice\n")
	for _, r := range l.Replicas {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s (%s)\n", r.Index, r.Health, Bytes(r.UsedBytes), Bytes(r.FreeBytes),
			r.HeadLSN, r.TailLSN, r.DurableLSN, r.SyncsTotal, Bytes(r.BytesWrittenTotal), r.Name, r.Kind)
		if r.LastError != "" {
			fmt.Fprintf(tw, "  \tlast error: %s\n", r.LastError)
		}
	}
	tw.Flush()
	return b.String()
}

func (f *FS) logText() []byte {
	r := f.report()
	return []byte("log\n" + r.Log.text())
}

// inflightText lists the requests older than the hung threshold.
func (f *FS) inflightText() []byte {
	now := time.Now()
	reqs := f.stats.tab.Older(now, f.opts.Stats.HungThreshold, false)
	slices.SortFunc(reqs, func(a, b inflight.Request) int { return a.Start.Compare(b.Start) })
	var b bytes.Buffer
	fmt.Fprintf(&b, "# requests older than %s: age op ino offset stage\n", f.opts.Stats.HungThreshold)
	for _, r := range reqs {
		fmt.Fprintf(&b, "%s %s %d %d %s\n", r.Age.Round(time.Millisecond), op(r.Op), r.Ino, r.Off, r.Stage)
	}
	return b.Bytes()
}

// Bytes renders a byte count in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		if v < unit {
			return fmt.Sprintf("%.1f%s", v, u)
		}
	}
	return fmt.Sprintf("%.1fPiB", v/unit)
}

func usText(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1000:
		return fmt.Sprintf("%.0fµs", v)
	case v < 1e6:
		return fmt.Sprintf("%.1fms", v/1000)
	}
	return fmt.Sprintf("%.2fs", v/1e6)
}

// limit renders a quota limit; 0 is none.
func limit(n uint64, bytes bool) string {
	if n == 0 {
		return "no limit"
	}
	if bytes {
		return Bytes(int64(n))
	}
	return fmt.Sprint(n)
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", f*100) }

func secs(s float64) string { return time.Duration(s * 1e9).Round(time.Millisecond).String() }

// sampler feeds the window rings and warns about hung requests, until the
// filesystem is unmounted.
func (f *FS) sampler() {
	th := f.opts.Stats.HungThreshold
	scan := min(time.Second, max(th/2, 10*time.Millisecond))
	t := time.NewTicker(scan)
	defer t.Stop()
	lastShort, lastLong := f.started, f.started
	for {
		select {
		case <-f.unmount:
			return
		case now := <-t.C:
			if now.Sub(lastShort) >= shortEvery {
				s := f.takeSample()
				f.win.short.Add(now, s)
				lastShort = now
				if now.Sub(lastLong) >= longEvery {
					f.win.long.Add(now, s)
					lastLong = now
				}
			}
			for _, r := range f.stats.tab.Older(now, th, true) {
				if r.FirstReport {
					f.log.WithFields(map[string]any{
						"op": op(r.Op).String(), "ino": r.Ino, "offset": r.Off, "age": r.Age.Round(time.Millisecond), "stage": r.Stage.String(),
					}).Warn("request hung")
				}
			}
		}
	}
}

// OpStat is one request kind's cumulative figures, for the Prometheus
// collector.
type OpStat struct {
	Name    string
	Count   int64
	Bytes   int64
	Latency metrics.HistSnapshot
}

// OpStats returns every request kind's figures since mount.
func (f *FS) OpStats() []OpStat {
	out := make([]OpStat, numOps)
	for i := range out {
		h := f.stats.snapshot(op(i))
		out[i] = OpStat{Name: op(i).String(), Count: h.Count, Bytes: h.Amount, Latency: h}
	}
	return out
}
