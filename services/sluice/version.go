package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

// buildVersion describes the binary from its embedded build info: the
// module version (a tag or pseudo-version when built with go install), the
// VCS commit and whether the tree had uncommitted changes.
func buildVersion(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return "sluice (unknown version: built without module support)"
	}
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var commit, at, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	out := "sluice " + version
	if commit != "" {
		out += "\ncommit " + commit + modified
	}
	if at != "" {
		out += "\nbuilt from a tree committed at " + at
	}
	return out + "\n" + info.GoVersion
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "Prints the module version and VCS commit this binary was built from.", stderr)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	fmt.Fprintln(stdout, buildVersion(debug.ReadBuildInfo()))
	return exitOK
}
