package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A patch is a zstd frame encoded with the base chunk as a raw dictionary (zstd's --patch-from):
// a chunk that changed in a few 4 KiB blocks costs those blocks, not the whole chunk.

// patchStash holds fetched patch frames, compressed (a few KiB each), until their bases are down.
type patchStash struct {
	mu     sync.Mutex
	frames map[string][]byte
}

func patchKey(pack string, offset int64) string { return fmt.Sprintf("%s@%d", pack, offset) }

func (p *patchStash) put(pack string, offset int64, frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frames[patchKey(pack, offset)] = append([]byte(nil), frame...)
}

func (p *patchStash) get(pack string, offset int64) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frames[patchKey(pack, offset)]
}

// applyPatches turns each patched chunk's base (already at its place) into the chunk, step by
// step, checking every step's hash; only the result is journalled.
func applyPatches(o *PullOrder, out *os.File, j *journal, stats *pullStats, patches *patchStash) error {
	if len(o.Patched) == 0 {
		return nil
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.IgnoreChecksum(true))
	if err != nil {
		return err
	}
	defer dec.Close()
	cur := make([]byte, o.ChunkSize)
	var written []int64
	for _, p := range o.Patched {
		if j.has(p.Index) {
			continue
		}
		n := min(o.ChunkSize, o.Size-p.Index*o.ChunkSize)
		if _, err := out.ReadAt(cur[:n], p.Index*o.ChunkSize); err != nil && err != io.EOF {
			return fmt.Errorf("reading the base of chunk %d: %v", p.Index, err)
		}
		data := cur[:n]
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != p.Base {
			return fmt.Errorf("chunk %d: its base is not in place: %w", p.Index, errCorrupt)
		}
		for _, s := range p.Steps {
			frame := patches.get(s.Pack, s.Offset)
			if frame == nil {
				return fmt.Errorf("chunk %d: patch %s@%d was not fetched: %w", p.Index, s.Pack, s.Offset, errCorrupt)
			}
			base := append([]byte(nil), data...)
			if err := dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, base)); err != nil {
				return err
			}
			next, err := dec.DecodeAll(frame, nil)
			sum := sha256.Sum256(next)
			if err != nil || hex.EncodeToString(sum[:]) != s.Hash {
				return fmt.Errorf("chunk %d: patch %s@%d: %w (%.12s…)", p.Index, s.Pack, s.Offset, errCorrupt, s.Hash)
			}
			data = next
		}
		if _, err := out.WriteAt(data, p.Index*o.ChunkSize); err != nil {
			return fmt.Errorf("writing chunk %d: %v", p.Index, err)
		}
		stats.WrittenBytes.Add(int64(len(data)))
		if written = append(written, p.Index); len(written) >= 64 {
			if err := j.record(written); err != nil {
				return err
			}
			written = nil
		}
	}
	return j.record(written)
}

// patchEncoder makes patches of chunks against their bases.
type patchEncoder struct {
	enc *zstd.Encoder
}

// newPatchEncoder: zstd's default level finds the dictionary's long matches in a 256 KiB chunk
// (a 4 KiB change costs ~4.1 KiB, 3.4 ms); in 1 MiB chunks only the "better" level does (28 ms).
func newPatchEncoder(chunkSize int64) *patchEncoder {
	level := zstd.SpeedDefault
	if chunkSize > 256<<10 {
		level = zstd.SpeedBetterCompression
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<23))
	if err != nil {
		fail(exitFailed, "zstd: %v", err)
	}
	return &patchEncoder{enc: enc}
}

// worthTrying: encoding against a dictionary costs milliseconds, so a chunk rewritten in more than
// half of its 4 KiB blocks (most chunks of a rewritten file) goes up whole without trying.
func worthTrying(base, data []byte) bool {
	const block = 4096
	changed, blocks := 0, 0
	for at := 0; at < len(data); at += block {
		end := min(at+block, len(data))
		blocks++
		if !bytes.Equal(base[at:end], data[at:end]) {
			changed++
		}
	}
	return changed*2 <= blocks
}

// patch encodes data with base as history: zstd finds the unchanged runs there.
func (p *patchEncoder) patch(base, data []byte) ([]byte, error) {
	if err := p.enc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(0, base)); err != nil {
		return nil, err
	}
	return p.enc.EncodeAll(data, nil), nil
}
