package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/pkg/apikey"
)

func runHashKey(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("hash-key", "Prints the SHA-256 of an API key, to put in projects[].api_keys[].sha256. With --new, makes a key first.", stderr)
	key := fs.String("key", "", "the key to hash")
	newKey := fs.Bool("new", false, "generate a new key and print it with its hash")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *newKey {
		k, err := apikey.Generate()
		if err != nil {
			fmt.Fprintln(stderr, "sluice hash-key:", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "key:    %s\nsha256: %s\n", k, apikey.Hash(k))
		return exitOK
	}
	if *key == "" {
		fmt.Fprintln(stderr, "sluice hash-key: give --key KEY or --new")
		return exitUsage
	}
	fmt.Fprintln(stdout, apikey.Hash(*key))
	return exitOK
}
