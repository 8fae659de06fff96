//go:build unix && !testhooks

package supervisor

// wedgeHook does nothing in a production build; see wedge_testhooks.go.
func wedgeHook() {}
