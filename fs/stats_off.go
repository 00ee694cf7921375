//go:build nostats

package fs

// statsOn is off in the nostats build: requests are neither counted nor
// tracked; .dcache still serves the engine's figures.
const statsOn = false
