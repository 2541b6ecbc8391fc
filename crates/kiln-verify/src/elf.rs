//! What the kernel and the dynamic loader need of an ELF file: its machine, its interpreter
//! (`PT_INTERP`) and, from its dynamic segment, `DT_NEEDED`, `DT_RPATH` and `DT_RUNPATH`. Read
//! through program headers only (as the loader does; section headers may be stripped), with the
//! `object` crate reading just the byte ranges it needs.

use std::io::{Read, Seek};

use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, ReadCache, ReadRef};

/// The first bytes of every ELF file.
pub(crate) const MAGIC: &[u8; 4] = b"\x7fELF";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ElfInfo {
    pub machine: u16,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    /// `DT_RPATH` entries, unexpanded.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` entries, unexpanded; `Some` when the tag is present (which disables RPATH).
    pub runpath: Option<Vec<String>>,
}

/// Parses the ELF file `file` (reading only the ranges it needs); the error says what is wrong
/// with it.
pub(crate) fn parse<R: Read + Seek>(file: R) -> Result<ElfInfo, String> {
    let cache = ReadCache::new(file);
    let data = &cache;
    let ident = data
        .read_bytes_at(0, 6)
        .map_err(|_| "it is shorter than an ELF header".to_owned())?;
    if &ident[..4] != MAGIC {
        return Err("it has no ELF magic".to_owned());
    }
    match elf::FileClass(ident[4]) {
        elf::ELFCLASS32 => parse_as::<FileHeader32<Endianness>, _>(data),
        elf::ELFCLASS64 => parse_as::<FileHeader64<Endianness>, _>(data),
        other => Err(format!("unknown ELF class {}", other.0)),
    }
}

fn parse_as<'data, Elf, R>(data: R) -> Result<ElfInfo, String>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let text = |e: object::read::Error| e.to_string();
    let header = Elf::parse(data).map_err(text)?;
    let endian = header.endian().map_err(text)?;
    let segments = header.program_headers(endian, data).map_err(text)?;
    let mut info = ElfInfo {
        machine: header.e_machine(endian).0,
        ..ElfInfo::default()
    };
    let mut dynamic: &[Elf::Dyn] = &[];
    for segment in segments {
        if let Some(interpreter) = segment.interpreter(endian, data).map_err(text)? {
            info.interpreter = Some(String::from_utf8_lossy(interpreter).into_owned());
        }
        if let Some(entries) = segment.dynamic(endian, data).map_err(text)? {
            dynamic = entries;
        }
    }
    let (mut strtab, mut strsz) = (None, 0u64);
    let (mut needed, mut rpath, mut runpath) = (Vec::new(), None, None);
    for entry in dynamic {
        let (tag, value) = (entry.tag(endian), entry.val(endian));
        match tag {
            elf::DT_NULL => break,
            elf::DT_NEEDED => needed.push(value),
            elf::DT_RPATH => rpath = Some(value),
            elf::DT_RUNPATH => runpath = Some(value),
            elf::DT_STRTAB => strtab = Some(value),
            elf::DT_STRSZ => strsz = value,
            _ => {}
        }
    }
    if needed.is_empty() && rpath.is_none() && runpath.is_none() {
        return Ok(info);
    }
    let bad = || "DT_STRTAB is not in a loaded segment of the file".to_owned();
    let strtab = strtab.ok_or("its dynamic segment has no DT_STRTAB")?;
    // DT_STRTAB is an address: find the file offset of the load segment that maps it.
    let offset = segments
        .iter()
        .filter(|s| s.p_type(endian) == elf::PT_LOAD)
        .find_map(|s| {
            let (vaddr, filesz) = (s.p_vaddr(endian).into(), s.p_filesz(endian).into());
            (vaddr <= strtab && strtab.checked_add(strsz)? <= vaddr + filesz)
                .then(|| s.p_offset(endian).into() + (strtab - vaddr))
        })
        .ok_or_else(bad)?;
    let strings = data.read_bytes_at(offset, strsz).map_err(|_| bad())?;
    let string = |at: u64| -> Result<String, String> {
        let bytes = usize::try_from(at)
            .ok()
            .and_then(|at| strings.get(at..))
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .ok_or("a dynamic string is outside DT_STRTAB")?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    };
    let list = |at: u64| -> Result<Vec<String>, String> {
        Ok(string(at)?.split(':').map(str::to_owned).collect())
    };
    info.needed = needed.into_iter().map(string).collect::<Result<_, _>>()?;
    info.rpath = rpath.map(list).transpose()?.unwrap_or_default();
    info.runpath = runpath.map(list).transpose()?;
    Ok(info)
}

/// The ELF machine an image of OCI architecture `architecture` runs; `None` when Kiln does not
/// know it (nothing is checked then).
pub(crate) fn machine_of(architecture: &str) -> Option<u16> {
    Some(match architecture {
        "amd64" => elf::EM_X86_64.0,
        "arm64" => elf::EM_AARCH64.0,
        "386" => elf::EM_386.0,
        "arm" => elf::EM_ARM.0,
        "ppc64le" => elf::EM_PPC64.0,
        "s390x" => elf::EM_S390.0,
        "riscv64" => elf::EM_RISCV.0,
        _ => return None,
    })
}

/// Debian's multiarch directory name for an ELF machine (`/usr/lib/<triplet>`).
pub(crate) fn triplet_of(machine: u16) -> Option<&'static str> {
    Some(match elf::Machine(machine) {
        elf::EM_X86_64 => "x86_64-linux-gnu",
        elf::EM_AARCH64 => "aarch64-linux-gnu",
        elf::EM_386 => "i386-linux-gnu",
        elf::EM_ARM => "arm-linux-gnueabihf",
        elf::EM_PPC64 => "powerpc64le-linux-gnu",
        elf::EM_S390 => "s390x-linux-gnu",
        elf::EM_RISCV => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// A readable name for an ELF machine.
pub(crate) fn machine_name(machine: u16) -> String {
    match elf::Machine(machine) {
        elf::EM_X86_64 => "x86-64".to_owned(),
        elf::EM_AARCH64 => "AArch64".to_owned(),
        elf::EM_386 => "i386".to_owned(),
        elf::EM_ARM => "ARM".to_owned(),
        elf::EM_PPC64 => "PowerPC64".to_owned(),
        elf::EM_S390 => "s390".to_owned(),
        elf::EM_RISCV => "RISC-V".to_owned(),
        other => format!("machine {}", other.0),
    }
}
