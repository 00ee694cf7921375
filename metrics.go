package main

// The Prometheus endpoint (stats.metrics_listen): a collector that turns
// the same figures as .dcache/stats.json into metrics at scrape time.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/fs"
	"github.com/dcache/dcache/internal/metrics"
)

// collector exports one mount's figures.
type collector struct {
	fsys *fs.FS
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("dcache_"+name, help, labels, nil)
}

var (
	descRequests     = desc("fuse_requests_total", "FUSE requests answered, by kind.", "op")
	descRequestBytes = desc("fuse_request_bytes_total", "Data bytes read or written by FUSE requests, by kind.", "op")
	descRequestDur   = desc("fuse_request_duration_seconds", "Time to answer a FUSE request, by kind.", "op")
	descInflightHung = desc("fuse_requests_hung", "Requests unanswered for longer than stats.hung_threshold.")

	descCacheSize    = desc("cache_size_bytes", "Page cache size (cache.size).")
	descCacheUsed    = desc("cache_used_bytes", "Page cache bytes holding data, dirty or clean.")
	descCacheDirty   = desc("cache_dirty_bytes", "Bytes written but not yet destaged.")
	descCacheClean   = desc("cache_clean_bytes", "Cached bytes that the backend also holds.")
	descCacheObjects = desc("cache_objects", "Files, directories and symlinks.")
	descHits         = desc("cache_read_hits_total", "Blocks read from the cache.")
	descMisses       = desc("cache_read_misses_total", "Backend records read on cache misses.")
	descEvictions    = desc("cache_evictions_total", "Clean pages evicted.")
	descWritten      = desc("cache_written_bytes_total", "Bytes written into the cache.")
	descRead         = desc("cache_read_bytes_total", "Bytes read through the cache.")
	descDirtyLimit   = desc("quota_dirty_limit_bytes", "Dirty budget (quota.dirty_bytes).")

	descDestaged    = desc("destage_bytes_total", "Bytes destaged to the backend.")
	descRounds      = desc("destage_rounds_total", "Destage rounds completed.")
	descFailures    = desc("destage_failures_total", "Destage rounds that failed.")
	descOldest      = desc("destage_oldest_dirty_age_seconds", "Age of the oldest dirty byte.")
	descRunning     = desc("destage_in_progress", "1 while a destage round runs.")
	descCheckpoints = desc("metadata_checkpoints_total", "Full metadata checkpoints written.")
	descDeltas      = desc("metadata_deltas_total", "Metadata deltas written.")

	descThrottled = desc("throttle_delayed_writes_total", "Writes delayed by the dirty budget.")
	descThrottleS = desc("throttle_delay_seconds_total", "Time writes spent delayed by the dirty budget.")

	descLogTail    = desc("log_tail_lsn", "Oldest LSN the log holds.")
	descLogLast    = desc("log_last_lsn", "Last LSN committed.")
	descLogDurable = desc("log_durable_lsn", "Last LSN durable on the write quorum.")
	descLogRecords = desc("log_records_total", "Records committed since mount.")
	descLogSyncs   = desc("log_sync_rounds_total", "Log sync rounds (group commits) since mount.")
	descRepUsed    = desc("log_replica_used_bytes", "Bytes of records held by a replica.", "replica", "device")
	descRepFree    = desc("log_replica_free_bytes", "Free bytes of a replica's record area.", "replica", "device")
	descRepHead    = desc("log_replica_head_lsn", "Last LSN written to a replica.", "replica", "device")
	descRepDurable = desc("log_replica_durable_lsn", "Last LSN synced on a replica.", "replica", "device")
	descRepSyncs   = desc("log_replica_syncs_total", "Device syncs of a replica.", "replica", "device")
	descRepBytes   = desc("log_replica_written_bytes_total", "Bytes written to a replica.", "replica", "device")
	descRepHealthy = desc("log_replica_healthy", "1 while a replica is written, 0 once it failed or is missing.", "replica", "device")

	descPrefetched = desc("prefetch_bytes_total", "Bytes read ahead from the backend.")
	descPrefHits   = desc("prefetch_hits_total", "Prefetched pages read afterwards.")
	descPrefWaste  = desc("prefetch_waste_total", "Prefetched pages dropped unread.")
	descQuotaBytes = desc("quota_used_bytes", "Bytes of a directory quota's tree.", "path")
	descQuotaLimit = desc("quota_limit_bytes", "Byte limit of a directory quota (0: none).", "path")

	descSegments = desc("backend_segments", "Backend segments.")
	descSegBytes = desc("backend_segment_bytes", "Bytes of all backend segments.")
	descLive     = desc("backend_live_bytes", "Bytes of backend records the metadata points at.")
	descBelow    = desc("backend_segments_below_clean_threshold", "Segments whose live fraction is below backend.clean_threshold.")
	descCleaned  = desc("backend_cleaned_segments_total", "Segments freed by cleaning.")
	descMoved    = desc("backend_cleaned_bytes_total", "Live bytes rewritten by cleaning.")
	descFreed    = desc("backend_freed_bytes_total", "Segment bytes given back by cleaning.")
)

func (c collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, o := range c.fsys.OpStats() {
		counter(descRequests, float64(o.Count), o.Name)
		counter(descRequestBytes, float64(o.Bytes), o.Name)
		buckets := make(map[float64]uint64, metrics.Buckets-1)
		var cum uint64
		for i := 0; i < metrics.Buckets-1; i++ {
			cum += uint64(o.Latency.Buckets[i])
			buckets[metrics.BucketUpper(i)/1e9] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descRequestDur, uint64(o.Latency.Count), float64(o.Latency.Sum)/1e9, buckets, o.Name)
	}
	r := c.fsys.Report()
	gauge(descInflightHung, float64(r.Inflight.Hung))
	gauge(descCacheSize, float64(r.Cache.SizeBytes))
	gauge(descCacheUsed, float64(r.Cache.UsedBytes))
	gauge(descCacheDirty, float64(r.Cache.DirtyBytes))
	gauge(descCacheClean, float64(r.Cache.CleanBytes))
	gauge(descCacheObjects, float64(r.Cache.Objects))
	counter(descHits, float64(r.Cache.ReadHitsTotal))
	counter(descMisses, float64(r.Cache.ReadMissesTotal))
	counter(descEvictions, float64(r.Cache.EvictionsTotal))
	counter(descWritten, float64(r.Cache.BytesWrittenTotal))
	counter(descRead, float64(r.Cache.BytesReadTotal))
	gauge(descDirtyLimit, float64(r.Quotas.DirtyBytesLimit))

	counter(descDestaged, float64(r.Destage.BytesTotal))
	counter(descRounds, float64(r.Destage.RoundsTotal))
	counter(descFailures, float64(r.Destage.FailuresTotal))
	gauge(descOldest, r.Destage.OldestDirtyAgeSeconds)
	running := 0.0
	if r.Destage.InProgress {
		running = 1
	}
	gauge(descRunning, running)
	counter(descCheckpoints, float64(r.Destage.CheckpointsTotal))
	counter(descDeltas, float64(r.Destage.DeltasTotal))
	counter(descThrottled, float64(r.Throttle.WritersDelayedTotal))
	counter(descThrottleS, r.Throttle.DelaySecondsTotal)

	gauge(descLogTail, float64(r.Log.TailLSN))
	gauge(descLogLast, float64(r.Log.LastLSN))
	gauge(descLogDurable, float64(r.Log.DurableLSN))
	counter(descLogRecords, float64(r.Log.RecordsTotal))
	counter(descLogSyncs, float64(r.Log.SyncRoundsTotal))
	for _, rep := range r.Log.Replicas {
		l := []string{strconv.Itoa(rep.Index), rep.Name}
		gauge(descRepUsed, float64(rep.UsedBytes), l...)
		gauge(descRepFree, float64(rep.FreeBytes), l...)
		gauge(descRepHead, float64(rep.HeadLSN), l...)
		gauge(descRepDurable, float64(rep.DurableLSN), l...)
		counter(descRepSyncs, float64(rep.SyncsTotal), l...)
		counter(descRepBytes, float64(rep.BytesWrittenTotal), l...)
		healthy := 0.0
		if rep.Health == "ok" {
			healthy = 1
		}
		gauge(descRepHealthy, healthy, l...)
	}
	counter(descPrefetched, float64(r.Prefetch.IssuedBytesTotal))
	counter(descPrefHits, float64(r.Prefetch.HitsTotal))
	counter(descPrefWaste, float64(r.Prefetch.WasteTotal))
	for _, q := range r.Quotas.Directories {
		gauge(descQuotaBytes, float64(q.BytesUsed), q.Path)
		gauge(descQuotaLimit, float64(q.BytesLimit), q.Path)
	}
	gauge(descSegments, float64(r.Backend.Segments))
	gauge(descSegBytes, float64(r.Backend.SegmentBytes))
	gauge(descLive, float64(r.Backend.LiveBytes))
	gauge(descBelow, float64(r.Backend.SegmentsBelowThreshold))
	counter(descCleaned, float64(r.Backend.CleanedSegmentsTotal))
	counter(descMoved, float64(r.Backend.CleanedBytesTotal))
	counter(descFreed, float64(r.Backend.FreedBytesTotal))
}

// metricsServer serves /metrics.
type metricsServer struct {
	srv  *http.Server
	done chan struct{}
}

// serveMetrics listens on addr and serves fsys's metrics, with the
// process's (CPU, memory) and the Go runtime's.
func serveMetrics(addr string, fsys *fs.FS, log *logrus.Entry) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{fsys: fsys},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: log}))
	m := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics endpoint stopped")
		}
	}()
	log.WithField("address", ln.Addr().String()).Info("serving Prometheus metrics on /metrics")
	return m, nil
}

func (m *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
}
