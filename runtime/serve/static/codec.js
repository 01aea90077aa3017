// Bytes the page makes and reads without libraries: CRC-32, 8-bit PNG label maps (grey or
// palette; zlib through the browser's CompressionStream/DecompressionStream) and a
// store-only ZIP. Label maps are Uint8Array(width * height), row-major, one label a pixel.
'use strict';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes, crc = 0) {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function zlibStream(bytes, stream) {
  const piped = new Blob([bytes]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(piped).arrayBuffer());
}

// The DAVIS (PASCAL VOC) palette, as runtime/io/mask_io.py davis_palette: 768 bytes.
function davisPalette() {
  const palette = new Uint8Array(768);
  for (let i = 0; i < 256; i++) {
    let r = 0, g = 0, b = 0, c = i;
    for (let shift = 7; shift >= 0; shift--) {
      r |= (c & 1) << shift; g |= ((c >> 1) & 1) << shift; b |= ((c >> 2) & 1) << shift;
      c >>= 3;
    }
    palette.set([r, g, b], 3 * i);
  }
  return palette;
}

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// labels -> PNG bytes: 8-bit greyscale (palette null) or palette (768 bytes) image.
async function encodePng(labels, width, height, palette = null) {
  const raw = new Uint8Array((width + 1) * height);  // filter byte 0 (none) per row
  for (let y = 0; y < height; y++) raw.set(labels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, palette ? 3 : 0, 0, 0, 0], 8);
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), pngChunk('IHDR', header)];
  if (palette) parts.push(pngChunk('PLTE', palette));
  parts.push(pngChunk('IDAT', await zlibStream(raw, new CompressionStream('deflate'))));
  parts.push(pngChunk('IEND', new Uint8Array(0)));
  return new Uint8Array(await new Blob(parts).arrayBuffer());
}

function paeth(a, b, c) {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// PNG bytes (grey or palette, bit depth 1/2/4/8, not interlaced) -> {width, height, labels}:
// the stored values (palette indices or grey levels), never colours.
async function decodePng(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8 || view.getUint32(0) !== 0x89504e47) throw new Error('not a PNG');
  let width = 0, height = 0, depth = 0, type = 0, interlace = 0;
  const idat = [];
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = view.getUint32(at);
    const name = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (name === 'IHDR') {
      width = view.getUint32(at + 8); height = view.getUint32(at + 12);
      depth = data[8]; type = data[9]; interlace = data[12];
    } else if (name === 'IDAT') idat.push(data);
    else if (name === 'IEND') break;
    at += 12 + length;
  }
  if ((type !== 0 && type !== 3) || ![1, 2, 4, 8].includes(depth) || interlace) {
    throw new Error(`label PNG must be grey or palette, 8 bits or less, not interlaced (type ${type}, depth ${depth})`);
  }
  const raw = await zlibStream(new Uint8Array(await new Blob(idat).arrayBuffer()), new DecompressionStream('deflate'));
  const stride = Math.ceil((width * depth) / 8);
  const rows = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = rows.subarray(y * stride, (y + 1) * stride), up = y ? rows.subarray((y - 1) * stride, y * stride) : null;
    for (let x = 0; x < stride; x++) {
      const a = x ? row[x - 1] : 0, b = up ? up[x] : 0, c = up && x ? up[x - 1] : 0;
      const predictor = [0, a, b, (a + b) >> 1, paeth(a, b, c)][filter];
      if (predictor === undefined) throw new Error(`bad PNG filter ${filter}`);
      row[x] = (src[x] + predictor) & 0xff;
    }
  }
  const labels = new Uint8Array(width * height), perByte = 8 / depth, mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const byte = rows[y * stride + Math.floor(x / perByte)];
      labels[y * width + x] = (byte >> (8 - depth * (1 + (x % perByte)))) & mask;
    }
  }
  if (type === 0 && depth < 8) for (let i = 0; i < labels.length; i++) labels[i] *= 255 / mask;
  return { width, height, labels };
}

// [{name, data: Uint8Array}] -> Blob of a ZIP archive, every file stored (no compression).
function makeZip(files) {
  if (files.length > 0xffff) throw new Error('a ZIP without ZIP64 holds at most 65535 files');
  const encoder = new TextEncoder(), parts = [], central = [];
  let offset = 0;
  for (const file of files) {
    const name = encoder.encode(file.name), crc = crc32(file.data), size = file.data.length;
    const local = new DataView(new ArrayBuffer(30));
    const entry = new DataView(new ArrayBuffer(46));
    // signature, version 2.0, UTF-8 names, stored, DOS time 0:00, date 1980-01-01
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true); local.setUint16(6, 0x0800, true);
    local.setUint16(12, 0x21, true); local.setUint32(14, crc, true);
    local.setUint32(18, size, true); local.setUint32(22, size, true); local.setUint16(26, name.length, true);
    entry.setUint32(0, 0x02014b50, true); entry.setUint16(4, 20, true); entry.setUint16(6, 20, true);
    entry.setUint16(8, 0x0800, true); entry.setUint16(14, 0x21, true); entry.setUint32(16, crc, true);
    entry.setUint32(20, size, true); entry.setUint32(24, size, true); entry.setUint16(28, name.length, true);
    entry.setUint32(42, offset, true);
    parts.push(local, name, file.data);
    central.push(entry, name);
    offset += 30 + name.length + size;
  }
  const centralSize = central.reduce((n, part) => n + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, centralSize, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: 'application/zip' });
}
