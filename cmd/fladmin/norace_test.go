//go:build !race

package main

// raceEnabled is true under the race detector, which makes a listing of
// 100,000 envoys take minutes.
const raceEnabled = false
