//go:build !nostats

package cachelayer

// trackObjects keeps the per-object log ranges and destage attempts of
// .dcache/objects. The nostats build tag compiles it out, to measure what
// statistics cost (scripts/stats-cost.sh).
const trackObjects = true
