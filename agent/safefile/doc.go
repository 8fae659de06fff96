//go:build unix

// Package safefile writes files as root into directories another user may
// control without ever following a link that user could plant: the
// directory is opened by descriptor, component by component, with no
// symlink followed; files are created with O_EXCL|O_NOFOLLOW relative to it,
// given their owner and mode on the open descriptor, and renamed within it.
// No path is chmod'ed or chown'ed after it is in place, so swapping the
// final name for a symlink achieves nothing.
package safefile
