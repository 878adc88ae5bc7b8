package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// PullOrder is a pull plan made concrete by the worker: paths on this host and presigned URLs.
type PullOrder struct {
	// Dir receives the VM: Disk inside it, and the extras archive unpacked into it. When whole it
	// is renamed to Final (if given), under the lock, so a second pull of the version finds it there.
	Dir   string `json:"dir"`
	Final string `json:"final"`
	// Digest is the version's; it goes into the completion marker once every chunk is verified.
	Digest    string `json:"digest"`
	Disk      string `json:"disk"`
	Size      int64  `json:"size"`
	ChunkSize int64  `json:"chunkSize"`
	// Copies are chunks a cached disk on this host already holds (the seed's and others').
	// Each is checked against Hash before it is written: a cached disk may have rotted since.
	Copies []struct {
		Index     int64  `json:"index"`
		From      string `json:"from"`
		FromIndex int64  `json:"fromIndex"`
		Hash      string `json:"hash"`
		// Base: the chunk a patch applies to, not the chunk itself (journalled only once patched).
		Base bool `json:"base"`
	} `json:"copies"`
	// SelfCopies repeat a chunk fetched for another place of the same disk.
	SelfCopies []struct {
		Index     int64  `json:"index"`
		FromIndex int64  `json:"fromIndex"`
		Hash      string `json:"hash"`
	} `json:"selfCopies"`
	// Patched chunks are stored as zstd patches against an earlier chunk (the base, put at Index by
	// a copy or a range first); Steps apply in order, each checked against its hash.
	Patched []struct {
		Index int64  `json:"index"`
		Hash  string `json:"hash"`
		Base  string `json:"base"`
		Steps []struct {
			Hash   string `json:"hash"`
			Pack   string `json:"pack"`
			Offset int64  `json:"offset"`
		} `json:"steps"`
	} `json:"patched"`
	URLs   map[string]string `json:"urls"`
	Ranges []FetchRange      `json:"ranges"`
	Extras *struct {
		URL    string `json:"url"`
		SHA256 string `json:"sha256"`
	} `json:"extras"`
	Concurrency int `json:"concurrency"`
	Attempts    int `json:"attempts"`
	// MaxBytesPerSecond caps the download (0: no cap), so a pre-pull leaves the link to running jobs.
	MaxBytesPerSecond int64 `json:"maxBytesPerSecond"`
}

// limiter spaces requests so that all lanes together stay under a rate.
type limiter struct {
	mu   sync.Mutex
	next time.Time
	rate float64
}

func (l *limiter) take(n int64) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	wait := l.next.Sub(now)
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	time.Sleep(wait)
}

// paced reads through a limiter, a slice at a time, so one large range is spread over time too.
type paced struct {
	r io.Reader
	l *limiter
}

func (p paced) Read(b []byte) (int, error) {
	if p.l == nil || p.l.rate <= 0 {
		return p.r.Read(b)
	}
	if len(b) > 256<<10 {
		b = b[:256<<10]
	}
	n, err := p.r.Read(b)
	p.l.take(int64(n))
	return n, err
}

// FetchRange is one ranged GET of a pack, carrying chunks to write.
type FetchRange struct {
	Pack   string `json:"pack"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Chunks []struct {
		Index  int64  `json:"index"`
		Hash   string `json:"hash"`
		At     int64  `json:"at"`
		Length int64  `json:"length"`
		// Base: a patch's base, written at Index but journalled only once patched. Patch: a patch
		// frame, kept compressed in memory until the bases are down.
		Base  bool `json:"base"`
		Patch bool `json:"patch"`
	} `json:"chunks"`
}

type pullStats struct {
	FetchedBytes  atomic.Int64
	WrittenBytes  atomic.Int64
	CopiedBytes   atomic.Int64
	Ranges        atomic.Int64
	Retries       atomic.Int64
	ResumedChunks int64
}

func (s *pullStats) event(kind string, total int, started time.Time) map[string]any {
	return map[string]any{
		"event": kind, "fetchedBytes": s.FetchedBytes.Load(), "writtenBytes": s.WrittenBytes.Load(),
		"copiedBytes": s.CopiedBytes.Load(), "ranges": s.Ranges.Load(), "rangesTotal": total,
		"retries": s.Retries.Load(), "resumedChunks": s.ResumedChunks,
		"seconds": time.Since(started).Seconds(),
	}
}

var errCorrupt = errors.New("chunk does not match its hash")

// journal records written chunk indexes, one per line, so a killed pull resumes.
type journal struct {
	mu   sync.Mutex
	f    *os.File
	done map[int64]bool
}

func openJournal(path string) (*journal, error) {
	j := &journal{done: map[int64]bool{}}
	if data, err := os.ReadFile(path); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if n, err := strconv.ParseInt(line, 10, 64); err == nil {
				j.done[n] = true
			}
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	j.f = f
	return j, err
}

func (j *journal) has(i int64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done[i]
}

// record is called only after the chunks' bytes are written, so a recorded chunk is on disk.
func (j *journal) record(indexes []int64) error {
	if len(indexes) == 0 {
		return nil
	}
	var b strings.Builder
	for _, i := range indexes {
		b.WriteString(strconv.FormatInt(i, 10))
		b.WriteByte('\n')
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, i := range indexes {
		j.done[i] = true
	}
	_, err := j.f.WriteString(b.String())
	return err
}

// lockDir makes two pulls of one version on one host (a job and a pre-pull) take turns.
func lockDir(dir string) func() {
	f, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fail(exitFailed, "cannot open lock %s.lock: %v", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		emit(map[string]any{"event": "waiting", "reason": "another pull of this version is running"})
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			fail(exitFailed, "cannot lock %s.lock: %v", dir, err)
		}
	}
	return func() { f.Close() }
}

func runPull(o *PullOrder) {
	if o.Dir == "" || o.Disk == "" || o.ChunkSize <= 0 || o.Size < 0 {
		fail(exitBadOrder, "order needs dir, disk, size and chunkSize")
	}
	for _, d := range []string{o.Dir, o.Final} {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			fail(exitFailed, "%v", err)
		}
	}
	if !digestPattern.MatchString(o.Digest) {
		fail(exitBadOrder, "order needs the version's digest (sha256:<64 hex>), got %q", o.Digest)
	}
	defer lockDir(o.Dir)()
	if o.Final != "" {
		if stateOf(o.Final, o.Disk, o.Digest) == stateVerified {
			emit(map[string]any{"event": "done", "alreadyComplete": true})
			return
		}
		// Whatever is there without a verified marker is not this version: never renamed over, never used.
		if err := os.RemoveAll(o.Final); err != nil {
			fail(exitFailed, "cannot remove the unverified %s: %v", o.Final, err)
		}
	}
	if stateOf(o.Dir, o.Disk, o.Digest) == stateVerified {
		finish(o)
		emit(map[string]any{"event": "done", "alreadyComplete": true})
		return
	}
	// A marker for another digest, or an old empty one, must not survive into this pull.
	os.Remove(filepath.Join(o.Dir, markerFile))
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		fail(exitFailed, "%v", err)
	}
	started := time.Now()
	diskPath := filepath.Join(o.Dir, o.Disk)
	// A bundle's disk may sit in a folder of its own (Parallels: harddisk.hdd/...hds), made before the extras arrive.
	if err := os.MkdirAll(filepath.Dir(diskPath), 0o755); err != nil {
		fail(exitFailed, "%v", err)
	}
	j, err := openJournal(diskPath + ".journal")
	if err != nil {
		fail(exitFailed, "cannot open journal: %v", err)
	}
	want := o.hashes()
	fresh := len(j.done) == 0
	flags := os.O_RDWR | os.O_CREATE
	if fresh {
		flags |= os.O_TRUNC
	}
	out, err := os.OpenFile(diskPath, flags, 0o644)
	if err != nil {
		fail(exitFailed, "cannot open %s: %v", diskPath, err)
	}
	defer out.Close()
	if fresh {
		// Holes everywhere: zero chunks are never written, so the disk stays sparse.
		if err := out.Truncate(o.Size); err != nil {
			fail(exitFailed, "cannot size %s: %v", diskPath, err)
		}
	} else {
		j.recheck(out, o, want)
	}
	stats := &pullStats{ResumedChunks: int64(len(j.done))}

	if o.Extras != nil {
		if err := fetchExtras(o.Extras.URL, o.Extras.SHA256, o.Dir, max(o.Attempts, 1)); err != nil {
			fail(exitFailed, "VM files: %v", err)
		}
	}

	stop := ticker(500*time.Millisecond, func() { emit(stats.event("progress", len(o.Ranges), started)) })
	defer stop()

	// Local copies first: disk to disk, journalled in batches.
	cp := &copier{o: o, out: out, j: j, stats: stats, buf: make([]byte, o.ChunkSize)}
	sources := map[string]*os.File{}
	for _, c := range o.Copies {
		if j.has(c.Index) {
			continue
		}
		src := sources[c.From]
		if src == nil {
			if src, err = os.Open(c.From); err != nil {
				fail(exitFailed, "cannot open cached disk %s: %v", c.From, err)
			}
			sources[c.From] = src
		}
		cp.copy(src, c.FromIndex, c.Index, c.Hash, !c.Base)
	}
	cp.flush()
	for _, s := range sources {
		s.Close()
	}

	patches := &patchStash{frames: map[string][]byte{}}
	if err := fetchAll(o, out, j, stats, patches); err != nil {
		code := exitFailed
		if errors.Is(err, errCorrupt) {
			code = exitCorrupt
		}
		fail(code, "%v", err)
	}

	if err := applyPatches(o, out, j, stats, patches); err != nil {
		fail(exitCorrupt, "%v", err)
	}
	// A chunk repeated in the disk was fetched once; its other places copy it now.
	for _, c := range o.SelfCopies {
		if !j.has(c.Index) {
			cp.copy(out, c.FromIndex, c.Index, c.Hash, true)
		}
	}
	cp.flush()
	if err := out.Sync(); err != nil {
		fail(exitFailed, "sync %s: %v", diskPath, err)
	}
	stop()
	j.f.Close()
	os.Remove(diskPath + ".journal")
	// Last: the marker names the digest whose every chunk was checked into this disk.
	if err := writeMarker(o.Dir, o.Digest); err != nil {
		fail(exitFailed, "%v", err)
	}
	finish(o)
	emit(stats.event("done", len(o.Ranges), started))
}

// copier copies chunks from a disk (a cached one, or the pull's own) into the pull's disk, and
// journals them in batches once written: a killed pull copies at most a batch again.
type copier struct {
	o     *PullOrder
	out   *os.File
	j     *journal
	stats *pullStats
	buf   []byte
	batch []int64
}

func (c *copier) copy(src *os.File, fromIndex, index int64, hash string, final bool) {
	n := min(c.o.ChunkSize, c.o.Size-index*c.o.ChunkSize)
	if _, err := src.ReadAt(c.buf[:n], fromIndex*c.o.ChunkSize); err != nil && err != io.EOF {
		fail(exitFailed, "reading %s: %v", src.Name(), err)
	}
	if sum := sha256.Sum256(c.buf[:n]); hex.EncodeToString(sum[:]) != hash {
		c.flush()
		if src != c.out {
			// The cached version is damaged: it stops counting as cached, so no pull seeds from it again.
			os.Remove(filepath.Join(filepath.Dir(src.Name()), markerFile))
			emit(map[string]any{"event": "badSource", "disk": src.Name(), "index": fromIndex})
		}
		fail(exitCorrupt, "chunk %d copied from %s (its chunk %d): %v; it no longer counts as cached, pull again", index, src.Name(), fromIndex, errCorrupt)
	}
	if _, err := c.out.WriteAt(c.buf[:n], index*c.o.ChunkSize); err != nil {
		fail(exitFailed, "writing %s: %v", c.out.Name(), err)
	}
	c.stats.CopiedBytes.Add(n)
	if !final {
		return
	}
	if c.batch = append(c.batch, index); len(c.batch) >= 64 {
		c.flush()
	}
}

func (c *copier) flush() {
	if err := c.j.record(c.batch); err != nil {
		fail(exitFailed, "journal: %v", err)
	}
	c.batch = nil
}

// fetchAll runs N lanes over the ranges still needed, each range retried on its own; the first
// range that fails for good stops the lanes.
func fetchAll(o *PullOrder, out *os.File, j *journal, stats *pullStats, patches *patchStash) error {
	var queue []*FetchRange
	for i := range o.Ranges {
		for _, c := range o.Ranges[i].Chunks {
			if !j.has(c.Index) {
				queue = append(queue, &o.Ranges[i])
				break
			}
		}
	}
	lanes := o.Concurrency
	if lanes <= 0 {
		lanes = 8
	}
	lanes = max(1, min(lanes, len(queue)))
	attempts := o.Attempts
	if attempts <= 0 {
		attempts = 4
	}
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: lanes, MaxConnsPerHost: lanes, DisableCompression: true},
		Timeout:   10 * time.Minute,
	}
	limit := &limiter{rate: float64(o.MaxBytesPerSecond)}
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var failed atomic.Bool
	var errOnce sync.Once
	for l := 0; l < lanes; l++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each chunk's SHA-256 is checked, so zstd's own frame checksum is redundant work.
			dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.IgnoreChecksum(true))
			defer dec.Close()
			buf := &laneBuffers{}
			for {
				k := next.Add(1) - 1
				if k >= int64(len(queue)) || failed.Load() {
					return
				}
				if err := fetchRange(client, dec, buf, o, queue[k], out, j, stats, patches, limit, attempts); err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// finish moves a whole, verified pull to its final place.
func finish(o *PullOrder) {
	if o.Final == "" {
		return
	}
	if err := os.Rename(o.Dir, o.Final); err != nil {
		fail(exitFailed, "cannot move %s to %s: %v", o.Dir, o.Final, err)
	}
	// The marker moves with the VM: it is what makes the VM count as cached (integrity.go).
	os.Remove(o.Dir + ".lock")
}

// laneBuffers are one lane's range body and decoded chunk, reused: fresh buffers of that size
// cost more in zeroing than the hash does.
type laneBuffers struct {
	body, chunk []byte
}

func fetchRange(client *http.Client, dec *zstd.Decoder, buf *laneBuffers, o *PullOrder, r *FetchRange, out *os.File, j *journal, stats *pullStats, patches *patchStash, limit *limiter, attempts int) error {
	url, ok := o.URLs[r.Pack]
	if !ok {
		return fmt.Errorf("no URL for pack %s", r.Pack)
	}
	var lastErr error
	for attempt := 1; attempt <= attempts; attempt++ {
		if attempt > 1 {
			stats.Retries.Add(1)
			time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
		}
		body, err := getRange(client, url, r.Offset, r.Length, buf.body, limit)
		if cap(body) > cap(buf.body) {
			buf.body = body[:0]
		}
		stats.FetchedBytes.Add(int64(len(body)))
		if err != nil {
			lastErr = fmt.Errorf("GET pack %s bytes %d+%d: %w", r.Pack, r.Offset, r.Length, err)
			continue
		}
		var written []int64
		lastErr = nil
		for _, c := range r.Chunks {
			if j.has(c.Index) {
				continue
			}
			if c.At+c.Length > int64(len(body)) {
				lastErr = fmt.Errorf("pack %s: short range", r.Pack)
				break
			}
			if c.Patch {
				// Checked once applied: the result's hash covers the frame.
				patches.put(r.Pack, r.Offset+c.At, body[c.At:c.At+c.Length])
				continue
			}
			data, err := dec.DecodeAll(body[c.At:c.At+c.Length], buf.chunk[:0])
			if cap(data) > cap(buf.chunk) {
				buf.chunk = data[:0]
			}
			sum := sha256.Sum256(data)
			if err != nil || hex.EncodeToString(sum[:]) != c.Hash {
				lastErr = fmt.Errorf("chunk %d from pack %s: %w (%.12s…)", c.Index, r.Pack, errCorrupt, c.Hash)
				break
			}
			if _, err := out.WriteAt(data, c.Index*o.ChunkSize); err != nil {
				return fmt.Errorf("writing chunk %d: %w", c.Index, err)
			}
			stats.WrittenBytes.Add(int64(len(data)))
			if !c.Base {
				written = append(written, c.Index)
			}
		}
		// What verified is kept even when a later chunk of the range did not.
		if err := j.record(written); err != nil {
			return err
		}
		if lastErr == nil {
			stats.Ranges.Add(1)
			return nil
		}
	}
	return lastErr
}

// getRange reads bytes offset..offset+length-1 of url into into (grown if it is too small).
func getRange(client *http.Client, url string, offset, length int64, into []byte, limit *limiter) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusPartialContent && res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return nil, fmt.Errorf("HTTP %d: %s", res.StatusCode, bytes.TrimSpace(msg))
	}
	if res.StatusCode == http.StatusOK { // a server that ignores Range sends the whole object
		body, err := io.ReadAll(res.Body)
		if err != nil {
			return body, err
		}
		if offset+length > int64(len(body)) {
			return nil, fmt.Errorf("object shorter than the range")
		}
		return body[offset : offset+length], nil
	}
	body := into[:0]
	if int64(cap(into)) < length {
		body = make([]byte, 0, length)
	}
	body = body[:length]
	n, err := io.ReadFull(paced{res.Body, limit}, body)
	if err != nil {
		return body[:n], err
	}
	return body, nil
}

// fetchExtras downloads the VM's small files (config, NVRAM), checks them and unpacks them into dir.
func fetchExtras(url, want, dir string, attempts int) error {
	var data []byte
	var err error
	for a := 0; a < attempts; a++ {
		var res *http.Response
		if res, err = http.Get(url); err == nil {
			data, err = io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil && res.StatusCode != http.StatusOK {
				err = fmt.Errorf("HTTP %d", res.StatusCode)
			}
		}
		if err == nil {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) == want {
				break
			}
			err = fmt.Errorf("VM files archive: %w", errCorrupt)
		}
		time.Sleep(time.Duration(200<<a) * time.Millisecond)
	}
	if err != nil {
		return err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	root := filepath.Clean(dir) + string(os.PathSeparator)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		target := filepath.Join(dir, h.Name)
		if !strings.HasPrefix(target+string(os.PathSeparator), root) {
			return fmt.Errorf("archive entry %q leaves the VM directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, os.FileMode(h.Mode)|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
}
