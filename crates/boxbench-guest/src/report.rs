//! The guest's serial report: the line
//! `boxbench-guest cpus=N [mp_cpus=M] mem_mib=M initrd_bytes=B initrd_crc32=HEX cmdline="..."`,
//! with the `boxbench-guest entry=...` and `boxbench-guest error: ...` lines printed before it.

use std::fmt;

const PREFIX: &str = "boxbench-guest ";
const REPORT_PREFIX: &str = "boxbench-guest cpus=";
const ENTRY_PREFIX: &str = "boxbench-guest entry=";
const ERROR_PREFIX: &str = "boxbench-guest error: ";
const CMDLINE_KEY: &str = "cmdline=\"";

/// The entry point the guest was started through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// Xen PVH: 32-bit entry at 0x100000, `hvm_start_info` in EBX.
    Pvh,
    /// Linux 32-bit boot protocol: entry at code32_start, `boot_params` in ESI (bzImage setup code).
    Linux32,
    /// Linux 64-bit boot protocol: entry at load address + 0x200, `boot_params` in RSI.
    Linux64,
}

impl BootEntry {
    fn as_str(self) -> &'static str {
        match self {
            BootEntry::Pvh => "pvh",
            BootEntry::Linux32 => "linux32",
            BootEntry::Linux64 => "linux64",
        }
    }
}

/// What the guest found and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestReport {
    /// The entry point taken, from the `entry=` line (None when that line is absent).
    pub entry: Option<BootEntry>,
    /// CPUs that answered: the bootstrap processor plus the application processors started.
    pub cpus: u32,
    /// Enabled processor entries in the MP table, printed only when it differs from `cpus`.
    pub mp_cpus: Option<u32>,
    /// RAM (type 1) of the e820 map / PVH memmap, rounded up to whole MiB.
    pub mem_mib: u64,
    /// Size of the initrd handed over, 0 when none.
    pub initrd_bytes: u64,
    /// CRC-32 (IEEE 802.3) of the initrd bytes, 0 when none.
    pub initrd_crc32: u32,
    /// The command line, verbatim.
    pub cmdline: String,
    /// Boot-protocol problems the guest reported (`boxbench-guest error: ...` lines).
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("guest console has no `boxbench-guest cpus=` report line")]
    Missing,
    #[error("guest report has no `{0}` field")]
    MissingField(&'static str),
    #[error("guest report field `{field}` has a bad value `{value}`")]
    BadValue { field: &'static str, value: String },
    #[error("guest report has an unknown field `{0}`")]
    UnknownField(String),
    #[error("guest report cmdline is not closed by a quote")]
    UnterminatedCmdline,
}

impl GuestReport {
    /// Parses the first report line of a guest console (other lines are skipped; `\r\n` line
    /// ends are accepted).
    pub fn parse(console: &str) -> Result<GuestReport, ReportError> {
        let lines = || console.lines().map(|line| line.strip_suffix('\r').unwrap_or(line));
        let report = lines().find(|line| line.starts_with(REPORT_PREFIX)).ok_or(ReportError::Missing)?;
        let entry = match lines().find_map(|line| line.strip_prefix(ENTRY_PREFIX)) {
            None => None,
            Some(name) => Some(parse_entry(name)?),
        };
        let errors = lines().filter_map(|line| line.strip_prefix(ERROR_PREFIX)).map(str::to_owned).collect();

        let fields = &report[PREFIX.len()..];
        let (fields, cmdline) = match fields.find(CMDLINE_KEY) {
            Some(at) => {
                let quoted = &fields[at + CMDLINE_KEY.len()..];
                let cmdline = quoted.strip_suffix('"').ok_or(ReportError::UnterminatedCmdline)?;
                (&fields[..at], cmdline)
            }
            None => return Err(ReportError::MissingField("cmdline")),
        };

        let mut cpus = None;
        let mut mp_cpus = None;
        let mut mem_mib = None;
        let mut initrd_bytes = None;
        let mut initrd_crc32 = None;
        for field in fields.split_whitespace() {
            let (key, value) = field.split_once('=').ok_or_else(|| ReportError::UnknownField(field.to_owned()))?;
            match key {
                "cpus" => cpus = Some(parse_number("cpus", value)?),
                "mp_cpus" => mp_cpus = Some(parse_number("mp_cpus", value)?),
                "mem_mib" => mem_mib = Some(parse_number("mem_mib", value)?),
                "initrd_bytes" => initrd_bytes = Some(parse_number("initrd_bytes", value)?),
                "initrd_crc32" => initrd_crc32 = Some(parse_crc(value)?),
                _ => return Err(ReportError::UnknownField(key.to_owned())),
            }
        }
        Ok(GuestReport {
            entry,
            cpus: cpus.ok_or(ReportError::MissingField("cpus"))?,
            mp_cpus,
            mem_mib: mem_mib.ok_or(ReportError::MissingField("mem_mib"))?,
            initrd_bytes: initrd_bytes.ok_or(ReportError::MissingField("initrd_bytes"))?,
            initrd_crc32: initrd_crc32.ok_or(ReportError::MissingField("initrd_crc32"))?,
            cmdline: cmdline.to_owned(),
            errors,
        })
    }

    /// Enabled processors of the MP table (equal to `cpus` when the guest left `mp_cpus` out).
    pub fn mp_table_cpus(&self) -> u32 {
        self.mp_cpus.unwrap_or(self.cpus)
    }
}

/// The guest's console lines for this report, exactly as the guest prints them.
impl fmt::Display for GuestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(entry) = self.entry {
            writeln!(f, "{ENTRY_PREFIX}{}", entry.as_str())?;
        }
        for error in &self.errors {
            writeln!(f, "{ERROR_PREFIX}{error}")?;
        }
        write!(f, "{REPORT_PREFIX}{}", self.cpus)?;
        if let Some(mp_cpus) = self.mp_cpus {
            write!(f, " mp_cpus={mp_cpus}")?;
        }
        write!(
            f,
            " mem_mib={} initrd_bytes={} initrd_crc32={:08x} {CMDLINE_KEY}{}\"",
            self.mem_mib, self.initrd_bytes, self.initrd_crc32, self.cmdline
        )
    }
}

fn parse_entry(name: &str) -> Result<BootEntry, ReportError> {
    [BootEntry::Pvh, BootEntry::Linux32, BootEntry::Linux64]
        .into_iter()
        .find(|entry| entry.as_str() == name)
        .ok_or_else(|| ReportError::BadValue { field: "entry", value: name.to_owned() })
}

fn parse_number<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, ReportError> {
    value.parse().map_err(|_| ReportError::BadValue { field, value: value.to_owned() })
}

fn parse_crc(value: &str) -> Result<u32, ReportError> {
    let well_formed = value.len() == 8 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return Err(ReportError::BadValue { field: "initrd_crc32", value: value.to_owned() });
    }
    u32::from_str_radix(value, 16).map_err(|_| ReportError::BadValue { field: "initrd_crc32", value: value.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GuestReport {
        GuestReport {
            entry: Some(BootEntry::Linux64),
            cpus: 2,
            mp_cpus: Some(4),
            mem_mib: 128,
            initrd_bytes: 100_000,
            initrd_crc32: 0x0a8c_5617,
            cmdline: "console=ttyS0 a=\"b c\" boxbench.test=x".to_owned(),
            errors: vec!["MP table lists more than 64 processors; only 64 are started".to_owned()],
        }
    }

    #[test]
    fn round_trips_through_display() {
        let report = sample();
        let console = format!("noise before\r\n{report}\r\nBOXBENCH_READY\r\n");
        assert_eq!(GuestReport::parse(&console), Ok(report));
    }

    #[test]
    fn parses_the_guest_line_without_optional_parts() {
        let console = "boxbench-guest cpus=1 mem_mib=64 initrd_bytes=0 initrd_crc32=00000000 cmdline=\"\"\n";
        let report = GuestReport::parse(console).unwrap();
        assert_eq!(report.entry, None);
        assert_eq!(report.mp_cpus, None);
        assert_eq!(report.mp_table_cpus(), 1);
        assert_eq!(report.mem_mib, 64);
        assert_eq!(report.cmdline, "");
        assert!(report.errors.is_empty());
    }

    #[test]
    fn rejects_a_console_without_report() {
        assert_eq!(GuestReport::parse("BOXBENCH_READY\n"), Err(ReportError::Missing));
    }

    #[test]
    fn rejects_bad_fields() {
        let line = |fields: &str| format!("boxbench-guest cpus=1 {fields}\n");
        assert_eq!(
            GuestReport::parse(&line("mem_mib=64 initrd_bytes=0 initrd_crc32=00000000")),
            Err(ReportError::MissingField("cmdline"))
        );
        assert_eq!(
            GuestReport::parse(&line("mem_mib=64 initrd_bytes=0 cmdline=\"x\"")),
            Err(ReportError::MissingField("initrd_crc32"))
        );
        assert_eq!(
            GuestReport::parse(&line("mem_mib=6x4 initrd_bytes=0 initrd_crc32=00000000 cmdline=\"\"")),
            Err(ReportError::BadValue { field: "mem_mib", value: "6x4".into() })
        );
        assert_eq!(
            GuestReport::parse(&line("mem_mib=64 initrd_bytes=0 initrd_crc32=ABCDEF01 cmdline=\"\"")),
            Err(ReportError::BadValue { field: "initrd_crc32", value: "ABCDEF01".into() })
        );
        assert_eq!(
            GuestReport::parse(&line("mem_mib=64 initrd_bytes=0 initrd_crc32=0 cmdline=\"\"")),
            Err(ReportError::BadValue { field: "initrd_crc32", value: "0".into() })
        );
        assert_eq!(
            GuestReport::parse(&line("mem_mib=64 disks=1 initrd_bytes=0 initrd_crc32=00000000 cmdline=\"\"")),
            Err(ReportError::UnknownField("disks".into()))
        );
        assert_eq!(
            GuestReport::parse(&line("mem_mib=64 initrd_bytes=0 initrd_crc32=00000000 cmdline=\"abc")),
            Err(ReportError::UnterminatedCmdline)
        );
        let bad_entry = "boxbench-guest entry=uefi\nboxbench-guest cpus=1 mem_mib=1 initrd_bytes=0 \
                         initrd_crc32=00000000 cmdline=\"\"\n";
        assert_eq!(GuestReport::parse(bad_entry), Err(ReportError::BadValue { field: "entry", value: "uefi".into() }));
    }
}
