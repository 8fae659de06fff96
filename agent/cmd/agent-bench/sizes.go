//go:build unix

package main

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// sizes prints the bytes of the binary's symbols (code, read-only and
// initialised data; not BSS) per module, largest first: the table in the
// README's "Where the agent's memory goes". bin must have its symbol table
// (built without -ldflags -s).
func sizes(bin string, top int) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("%s: %w (build it without -ldflags -s)", bin, err)
	}
	by := map[string]int64{}
	var total int64
	for _, s := range syms {
		if int(s.Section) >= len(f.Sections) || s.Section == elf.SHN_UNDEF {
			continue
		}
		if f.Sections[s.Section].Type == elf.SHT_NOBITS {
			continue // BSS: zero pages, not in the file
		}
		m := module(s.Name)
		by[m] += int64(s.Size)
		total += int64(s.Size)
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return by[keys[i]] > by[keys[j]] })
	fmt.Println("| module or std area | symbol bytes | share |")
	fmt.Println("|---|---|---|")
	for i, k := range keys {
		if i == top {
			break
		}
		fmt.Printf("| %s | %d KiB | %.1f %% |\n", k, by[k]>>10, 100*float64(by[k])/float64(total))
	}
	fmt.Printf("| all symbols | %d KiB | |\n", total>>10)
	return nil
}

// module names the part of the build a symbol belongs to: a module (AWS SDK
// services each on their own), a standard-library area, or the runtime.
func module(sym string) string {
	for _, p := range []string{"type:", "go:itab.", "go:string."} {
		sym = strings.TrimPrefix(sym, p)
	}
	sym = strings.TrimLeft(sym, "(*[]")
	if i := strings.IndexAny(sym, "(["); i >= 0 {
		sym = sym[:i]
	}
	pkg := sym
	if j := strings.IndexByte(sym[strings.LastIndexByte(sym, '/')+1:], '.'); j >= 0 {
		pkg = sym[:strings.LastIndexByte(sym, '/')+1+j]
	}
	parts := strings.Split(pkg, "/")
	switch {
	case strings.HasPrefix(sym, "go:") || pkg == "runtime" || strings.HasPrefix(pkg, "runtime/"):
		return "runtime and function tables"
	case parts[0] == "vendor":
		return "std (vendored x/net, x/crypto, x/text)"
	case !strings.Contains(parts[0], "."):
		return "std: " + parts[0]
	case strings.HasPrefix(pkg, "github.com/aws/aws-sdk-go-v2/service/") && len(parts) > 4:
		return "aws-sdk-go-v2/service/" + parts[4]
	case strings.HasPrefix(pkg, "github.com/aws/aws-sdk-go-v2"):
		return "aws-sdk-go-v2 (core, credentials, imds)"
	case parts[0] == "github.com" && len(parts) >= 3:
		return strings.Join(parts[:3], "/")
	case len(parts) >= 2:
		return strings.Join(parts[:2], "/")
	}
	return pkg
}
