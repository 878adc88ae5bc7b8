package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// markerFile holds the digest of the version a directory's disk was verified to be, chunk by
// chunk. It is written last; without it (or with another digest in it) the directory is not that
// version, whatever files it holds. The CLI's cache and the hosts' cache both ask this file.
const markerFile = ".complete"

var digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

const (
	stateVerified = "verified" // marker with this digest, disk present: cached, may seed other pulls
	statePartial  = "partial"  // a journal: an interrupted pull of it resumes from there
	stateAbsent   = "absent"   // nothing there
	stateUnusable = "unusable" // anything else: neither cached nor a seed, overwritten by its next pull
)

func stateOf(dir, disk, digest string) string {
	if _, err := os.Stat(dir); err != nil {
		return stateAbsent
	}
	marker, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err == nil && strings.TrimSpace(string(marker)) == digest {
		if _, err := os.Stat(filepath.Join(dir, disk)); err == nil {
			return stateVerified
		}
	}
	if _, err := os.Stat(filepath.Join(dir, disk+".journal")); err == nil {
		return statePartial
	}
	return stateUnusable
}

func writeMarker(dir, digest string) error {
	tmp := filepath.Join(dir, markerFile+".tmp")
	if err := os.WriteFile(tmp, []byte(digest+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, markerFile))
}

// InspectOrder lists directories that may hold versions: the one rule for what counts as cached.
type InspectOrder struct {
	Dirs []struct {
		Dir    string `json:"dir"`
		Disk   string `json:"disk"`
		Digest string `json:"digest"`
	} `json:"dirs"`
}

func runInspect(o *InspectOrder) {
	states := make([]string, len(o.Dirs))
	for i, d := range o.Dirs {
		if d.Dir == "" || d.Disk == "" || !digestPattern.MatchString(d.Digest) {
			fail(exitBadOrder, "inspect: entry %d needs dir, disk and a digest (sha256:<64 hex>)", i)
		}
		states[i] = stateOf(d.Dir, d.Disk, d.Digest)
	}
	emit(map[string]any{"event": "done", "states": states})
}

// hashes is what every chunk this order writes must hash to, by index.
func (o *PullOrder) hashes() map[int64]string {
	want := map[int64]string{}
	for _, c := range o.Copies {
		want[c.Index] = c.Hash
	}
	for _, c := range o.SelfCopies {
		want[c.Index] = c.Hash
	}
	for _, r := range o.Ranges {
		for _, c := range r.Chunks {
			want[c.Index] = c.Hash
		}
	}
	for _, p := range o.Patched {
		want[p.Index] = p.Hash
	}
	return want
}

// recheck hashes the chunks an interrupted pull journalled and forgets any that do not match (a
// write the kernel lost, or a journal from another order): they are done again.
func (j *journal) recheck(disk *os.File, o *PullOrder, want map[int64]string) {
	buf := make([]byte, o.ChunkSize)
	for i := range j.done {
		n := min(o.ChunkSize, o.Size-i*o.ChunkSize)
		if n <= 0 || want[i] == "" {
			delete(j.done, i)
			continue
		}
		if _, err := disk.ReadAt(buf[:n], i*o.ChunkSize); err != nil && err != io.EOF {
			delete(j.done, i)
			continue
		}
		if sum := sha256.Sum256(buf[:n]); hex.EncodeToString(sum[:]) != want[i] {
			delete(j.done, i)
		}
	}
}
