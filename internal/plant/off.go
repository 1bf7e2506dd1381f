//go:build !chaosplant

package plant

// On reports whether bug name is switched on: never, without the
// chaosplant build tag.
func On(name string) bool { return false }

// Once reports whether bug name fires now: never, without the chaosplant
// build tag.
func Once(name string) bool { return false }
