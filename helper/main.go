// marina-image-helper moves chunked image versions (docs/image-format.md) between a disk on a
// Mac host and S3, driven by an order it reads on stdin. It holds no AWS credentials and makes
// no decisions: the worker plans what moves (src/images/chunked/plan.ts) and presigns every
// URL it names; this program executes the order, checks every byte and reports progress as one
// JSON object per line on stdout. One static binary per platform, no runtime on the host.
//
//	marina-image-helper version
//	marina-image-helper pull  < order   # chunks into a sparse disk, hash-checked, resumable
//	marina-image-helper inspect < order # which directories hold a verified version (cached), which resume
//	marina-image-helper hash  < order   # the SHA-256 of every chunk of a disk (null: all zero)
//	marina-image-helper push  < order   # the named chunks, compressed into packs, PUT
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

// Version is what the worker compares before it trusts an installed helper.
const Version = "2"

// Exit codes the activity maps to failures: 2 for a bad order, 3 for data that never verified.
const (
	exitFailed   = 1
	exitBadOrder = 2
	exitCorrupt  = 3
)

var outMu sync.Mutex

// emit writes one event line; events from concurrent lanes never interleave.
func emit(v any) {
	b, _ := json.Marshal(v)
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "marina-image-helper: "+format+"\n", args...)
	os.Exit(code)
}

func readOrder(v any) {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(exitBadOrder, "cannot read the order on stdin: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		fail(exitBadOrder, "the order on stdin is not valid JSON: %v", err)
	}
}

// ticker calls report every interval until stopped, so progress flows while lanes work.
func ticker(every time.Duration, report func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				report()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

func main() {
	if len(os.Args) < 2 {
		fail(exitBadOrder, "usage: marina-image-helper version|pull|inspect|hash|push < order.json")
	}
	// A CPU profile of one run, for benchmarks on a developer's machine (never set on hosts).
	if path := os.Getenv("MARINA_HELPER_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	switch os.Args[1] {
	case "version":
		fmt.Println(Version)
	case "pull":
		var o PullOrder
		readOrder(&o)
		runPull(&o)
	case "inspect":
		var o InspectOrder
		readOrder(&o)
		runInspect(&o)
	case "hash":
		var o HashOrder
		readOrder(&o)
		runHash(&o)
	case "push":
		var o PushOrder
		readOrder(&o)
		runPush(&o)
	default:
		fail(exitBadOrder, "unknown command %q: use version, pull, inspect, hash or push", os.Args[1])
	}
}
