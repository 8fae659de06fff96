//go:build unix

// Command attacker is the unprivileged user of the symlink-race tests: run
// as a directory's owner, it replaces every name in the directory (the
// writer's temporary files included) with a symlink to a victim file until
// its stdin closes, then prints how many swaps it made.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: attacker DIR VICTIM")
		os.Exit(2)
	}
	swaps, err := attack(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(swaps)
}

func attack(dir, victim string) (int, error) {
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	swaps := 0
	for n := 0; ; n++ {
		select {
		case <-stop:
			return swaps, nil
		default:
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return swaps, err
		}
		names := []string{"config.yaml", ".auth_token"}
		for _, e := range ents {
			if e.Type()&os.ModeSymlink == 0 {
				names = append(names, e.Name())
			}
		}
		for _, name := range names {
			link := filepath.Join(dir, "x"+strconv.Itoa(n))
			if os.Symlink(victim, link) != nil {
				continue
			}
			if os.Rename(link, filepath.Join(dir, name)) == nil {
				swaps++
			} else {
				_ = os.Remove(link)
			}
		}
	}
}
