package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/quant"
)

func init() { register(newEnvCmd) }

// buildInfo is what the binary knows about itself: module version, the commit it was built from, Go.
type buildInfo struct {
	Version   string   `json:"version"`
	Commit    string   `json:"commit,omitempty"`
	CommitAt  string   `json:"commit_time,omitempty"`
	Modified  bool     `json:"modified,omitempty"` // built from a work tree with uncommitted changes
	GoVersion string   `json:"go"`
	Platform  string   `json:"platform"`
	Tags      string   `json:"build_tags,omitempty"`
	Kernels   []string `json:"cpu_features"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, Kernels: append(kernels.Features(), quant.Features()...)}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.Version = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.CommitAt = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		case "-tags":
			b.Tags = s.Value
		}
	}
	return b
}

// versionLine is `lorakit --version`.
func versionLine() string {
	b := readBuildInfo()
	s := "lorakit " + b.Version
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " commit " + c
		if b.Modified {
			s += "+modified"
		}
		if b.CommitAt != "" {
			s += " (" + b.CommitAt + ")"
		}
	}
	s += ", " + b.GoVersion + " " + b.Platform
	if b.Tags != "" {
		s += " tags " + b.Tags
	}
	return s + ", kernels: " + strings.Join(b.Kernels, " ")
}

// envReport is what a bug report needs: the build, the machine, and the settings that change behaviour.
type envReport struct {
	Build      buildInfo         `json:"build"`
	CPU        string            `json:"cpu,omitempty"`
	CPUs       int               `json:"cpus"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	MemoryMiB  int64             `json:"memory_mib,omitempty"`
	Env        map[string]string `json:"env"`
}

func newEnvCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print what a bug report needs: version, commit, Go, CPU and its features in use, memory, settings",
		Long: `env prints the build (version, commit, Go version, build tags), the CPU model, core count, memory,
the kernels' instruction sets in use, and the environment variables lorakit reads (HF_TOKEN is shown only
as set or unset). Paste it into a bug report.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := envReport{Build: readBuildInfo(), CPU: procField("/proc/cpuinfo", "model name"), CPUs: runtime.NumCPU(),
				GOMAXPROCS: runtime.GOMAXPROCS(0), Env: map[string]string{}}
			if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
				var n int64
				fmt.Sscanf(kb, "%d", &n)
				r.MemoryMiB = n / 1024
			}
			for _, kv := range os.Environ() {
				k, v, _ := strings.Cut(kv, "=")
				switch {
				case k == "HF_TOKEN":
					r.Env[k] = "(set)"
				case strings.HasPrefix(k, "LORAKIT_"), k == "HF_ENDPOINT", k == "GOMAXPROCS", k == "GODEBUG", k == "GOGC", k == "GOMEMLIMIT":
					r.Env[k] = v
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), r)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, versionLine())
			fmt.Fprintf(w, "cpu: %s, %d cores (GOMAXPROCS %d)\n", orDash(r.CPU), r.CPUs, r.GOMAXPROCS)
			fmt.Fprintf(w, "kernels: %s\n", strings.Join(r.Build.Kernels, " "))
			if r.MemoryMiB > 0 {
				fmt.Fprintf(w, "memory: %d MiB\n", r.MemoryMiB)
			}
			keys := make([]string, 0, len(r.Env))
			for k := range r.Env {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if len(keys) == 0 {
				fmt.Fprintln(w, "env: no LORAKIT_*, HF_* or Go runtime variables set")
			}
			for _, k := range keys {
				fmt.Fprintf(w, "env: %s=%s\n", k, r.Env[k])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// procField returns the value of the first "key: value" line of a /proc file ("" when absent).
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
