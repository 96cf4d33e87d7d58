//! The executable itself: a static x86-64 ELF with no interpreter, so it runs
//! alone in a `FROM scratch` image. Whichever binary the suites drive: the
//! debug build, or a shipped one that S2S_BINARY names.

mod common;

use common::job::binary;

fn u16_at(bytes: &[u8], at: usize) -> usize {
    u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize
}

fn u64_at(bytes: &[u8], at: usize) -> usize {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word) as usize
}

#[test]
fn is_a_static_x86_64_elf_without_an_interpreter() {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: usize = 62;
    let elf = std::fs::read(binary()).expect("read the binary");
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not a 64-bit ELF");
    assert_eq!(u16_at(&elf, 0x12), EM_X86_64, "not x86-64");
    let (offset, size, count) = (u64_at(&elf, 0x20), u16_at(&elf, 0x36), u16_at(&elf, 0x38));
    for i in 0..count {
        let at = offset + i * size;
        let kind = u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]);
        assert_ne!(kind, PT_INTERP, "the binary asks for a dynamic loader");
    }
}
