//go:build race

package metrics

// raceEnabled: under the race detector, sync.Pool drops items at random.
const raceEnabled = true
