//go:build !linux

package envoy

// setSubreaper does nothing where there is no child subreaper: orphans go
// to init, which reaps them.
func setSubreaper() {}
