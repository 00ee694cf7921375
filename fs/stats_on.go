//go:build !nostats

package fs

// statsOn records per-request statistics and in-flight requests. The
// nostats build tag compiles them down to nothing, so that their cost can
// be measured (scripts/stats-cost.sh).
const statsOn = true
