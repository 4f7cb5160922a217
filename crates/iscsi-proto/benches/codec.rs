//! Micro-benchmarks of the hot path: building and parsing SCSI Command, Data-In and SCSI
//! Response PDUs, with and without CRC32C digests, and CRC32C itself.
//!
//! `cargo bench -p iscsi-proto --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iscsi_proto::{
    frame::{Digests, FrameDecoder, FrameEncoder},
    pdu::{DataIn, Pdu, ScsiCommand, ScsiResponse},
};

fn write_command(len: usize) -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    Pdu::ScsiCommand(ScsiCommand {
        final_bit: true,
        write: true,
        attr: 1,
        itt: 7,
        expected_len: len as u32,
        cmd_sn: 11,
        exp_stat_sn: 3,
        cdb: iscsi_proto::pdu::Cdb::from_slice(&cdb),
        data: Bytes::from(vec![0x5a; len]),
        ..Default::default()
    })
}

fn data_in(len: usize) -> Pdu {
    Pdu::DataIn(DataIn {
        final_bit: true,
        itt: 7,
        data: Bytes::from(vec![0xa5; len]),
        status: Some(0),
        ..Default::default()
    })
}

fn bench_codec(c: &mut Criterion) {
    for digests in [
        Digests::default(),
        Digests {
            header: true,
            data: true,
        },
    ] {
        let tag = if digests.header { "crc32c" } else { "plain" };
        for len in [4096usize, 262_144] {
            let mut g = c.benchmark_group(format!("codec/{tag}/{len}"));
            g.throughput(Throughput::Bytes(len as u64));
            let mut enc = FrameEncoder::new(digests);
            let cmd = write_command(len);
            g.bench_function("encode write command", |b| {
                b.iter(|| black_box(enc.encode(black_box(&cmd))))
            });
            let wire = FrameEncoder::new(digests).encode(&cmd).to_bytes();
            let dec = FrameDecoder {
                digests,
                max_data_segment: 1 << 24,
            };
            g.bench_function("decode write command", |b| {
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    let f = dec.decode(&mut buf).ok().flatten();
                    black_box(f.and_then(|f| f.pdu().ok()))
                })
            });
            let din = data_in(len);
            g.bench_function("encode data-in", |b| {
                b.iter(|| black_box(enc.encode(black_box(&din))))
            });
            g.finish();
        }
        let resp = Pdu::ScsiResponse(ScsiResponse {
            itt: 7,
            stat_sn: 4,
            ..Default::default()
        });
        let mut enc = FrameEncoder::new(digests);
        c.bench_function(&format!("codec/{tag}/encode scsi response"), |b| {
            b.iter(|| black_box(enc.encode(black_box(&resp))))
        });
    }
}

fn bench_crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for len in [48usize, 4096, 262_144] {
        let data = vec![0x3cu8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len} bytes"), |b| {
            b.iter(|| black_box(crc32c::crc32c(black_box(&data))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_codec, bench_crc);
criterion_main!(benches);
