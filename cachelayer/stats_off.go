//go:build nostats

package cachelayer

// trackObjects is off in the nostats build: objects show no log range.
const trackObjects = false
