//! `shoudan provision`: what a deployment needs before its first start and whenever it takes on
//! a merchant or a terminal. Every subcommand works on a node's configuration (`--config`, the
//! file `serve` reads): its master key and key store, and its database.
//!
//! - `init`: a new master key (mode 0400) and an empty key store under it.
//! - `key`: a TMK or an issuer's ZPK from clear components its custodians type in, one per line
//!   on standard input, not echoed when it is a terminal (split knowledge: no one person sees
//!   the key). Each component's check value is printed as it is read, so each custodian checks
//!   their own; then the key's handle and check value. Neither a component nor the key is ever
//!   printed.
//! - `keys`: what the key store holds, by handle, usage and check value.
//! - `merchant`: a merchant applies with its qualification data; it takes no cards until an
//!   operator approves it on the console (`risk::ops`, maker and checker).
//! - `terminal`: a terminal of a merchant, with a TMK already in the key store; refused unless
//!   the key is a TMK of the family its key scheme needs and the MAC fits the scheme.
//! - `user`: a portal or console user (the first admin of a deployment); the password is read
//!   from standard input.
//!
//! A node reads its key store and its terminals when it starts: restart it (every node, with
//! the key store copied to each) after adding a key or a terminal.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paycrypto::{
    Hsm, Key, KeyAlgorithm, KeyHandle, KeyScheme, KeyUsage, MacAlgorithm, MakLength, MasterKey,
    OsRandom, RandomSource, SoftHsm, Zeroizing,
};
use store::Store;
use switch::Clock;

use crate::CliResult;
use crate::serve::ServeConfig;

/// Clear components a key is made of: two or three, as key custodians hold them.
const COMPONENTS: std::ops::RangeInclusive<u8> = 2..=3;
/// A merchant's registered name: what receipts, pages and field 63 show.
const MERCHANT_NAME_CHARS_MAX: usize = 40;
/// Who the audit rows and review history name for what this command does.
const ACTOR: &str = "cli:provision";

#[derive(clap::Subcommand)]
pub enum ProvisionCmd {
    /// A new deployment's master key (its file, mode 0400; or, with master_key_components, from
    /// the custodians' components typed twice each on standard input, written nowhere) and an
    /// empty key store, at the paths the configuration's [hsm] names. Refused if either exists.
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// A TMK or an issuer's zone PIN key, from clear components read one per line on standard
    /// input (hex), after the master key's components when custodians hold it. Prints each
    /// component's KCV as it is read, then the key's handle and KCV.
    Key {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum)]
        usage: ImportUsage,
        #[arg(long, value_enum, default_value = "3des")]
        algorithm: ImportAlgorithm,
        /// How many components make the key (2 or 3).
        #[arg(long, default_value_t = 2)]
        components: u8,
        /// The KCV the key must have (its first 6 hex digits or all 8, from the key's
        /// paperwork): checked before the key is stored. Without it, a line `yes` after the
        /// components confirms that every component's KCV matched its paperwork.
        #[arg(long)]
        kcv: Option<String>,
    },
    /// The keys in the key store: handle, usage, algorithm, length and KCV (never the key).
    Keys {
        #[arg(long)]
        config: PathBuf,
    },
    /// A merchant applies with its qualification data; an operator approves it on the console
    /// before its terminals take cards.
    Merchant {
        #[arg(long)]
        config: PathBuf,
        /// 15 characters (field 42), digits and capital letters.
        #[arg(long)]
        mid: String,
        /// The registered name receipts and pages show.
        #[arg(long)]
        name: String,
        /// Unified social credit code (统一社会信用代码), 18 characters.
        #[arg(long)]
        licence_no: String,
        /// Legal person (法定代表人).
        #[arg(long)]
        legal_person: String,
        /// Four-digit merchant category code.
        #[arg(long)]
        mcc: String,
        #[arg(long)]
        address: String,
    },
    /// A terminal of a merchant, with its TMK already imported (`provision key --usage tmk`).
    Terminal {
        #[arg(long)]
        config: PathBuf,
        /// 8 characters (field 41), digits and capital letters.
        #[arg(long)]
        tid: String,
        #[arg(long)]
        mid: String,
        /// The TMK's handle, as `provision key` printed it (key-N).
        #[arg(long)]
        tmk: String,
        /// Sign-in key scheme of field 60.3: 001 (single DES), 003, 004 (3DES, 004 with a
        /// track key) or 006 (SM4).
        #[arg(long, default_value = "004")]
        key_scheme: String,
        /// The terminal's MAC: x919, cup-ecb or sm4 (SM4 goes with scheme 006 only).
        #[arg(long, default_value = "x919")]
        mac: String,
        /// A single-length MAK under 003/004, for a terminal that MACs with single DES (CUP
        /// ECB only).
        #[arg(long)]
        single_mak: bool,
    },
    /// A portal or console user; the password is the first line of standard input (after the
    /// master key's components, when custodians hold it).
    User {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        /// merchant, operator or admin.
        #[arg(long)]
        role: String,
        /// The merchant a merchant user belongs to (no other role has one).
        #[arg(long)]
        mid: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportUsage {
    /// A terminal master key.
    Tmk,
    /// A zone PIN key shared with an issuer.
    Zpk,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportAlgorithm {
    #[value(name = "3des")]
    TripleDes,
    Sm4,
}

pub fn run(cmd: ProvisionCmd) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stdin = std::io::stdin();
    run_with(cmd, &mut stdin.lock(), &runtime)
}

/// Runs a subcommand; the store is closed (its writer joined) outside the runtime.
fn run_with(
    cmd: ProvisionCmd,
    input: &mut dyn BufRead,
    runtime: &tokio::runtime::Runtime,
) -> CliResult {
    match cmd {
        ProvisionCmd::Init { config } => init(&ServeConfig::load(&config)?, input),
        ProvisionCmd::Key {
            config,
            usage,
            algorithm,
            components,
            kcv,
        } => {
            let config = ServeConfig::load(&config)?;
            let usage = match usage {
                ImportUsage::Tmk => KeyUsage::Tmk,
                ImportUsage::Zpk => KeyUsage::Zpk,
            };
            let algorithm = match algorithm {
                ImportAlgorithm::TripleDes => KeyAlgorithm::Des,
                ImportAlgorithm::Sm4 => KeyAlgorithm::Sm4,
            };
            import_key(&config, usage, algorithm, components, kcv.as_deref(), input)
        }
        ProvisionCmd::Keys { config } => {
            let config = ServeConfig::load(&config)?;
            let hsm = crate::serve::open_hsm(&config.hsm, input)?;
            for handle in hsm.stored_handles() {
                let info = hsm.key_info(handle)?;
                let kcv = info.kcv.to_string();
                // The handle's, usage's and algorithm's `Display` ignore widths: pad strings.
                println!(
                    "{:<8} {:<4} {:<8} {:>2} bytes  KCV {}",
                    handle.to_string(),
                    info.usage.to_string(),
                    info.algorithm.to_string(),
                    info.len_bytes,
                    kcv.get(..6).unwrap_or(&kcv)
                );
            }
            Ok(())
        }
        ProvisionCmd::Merchant {
            config,
            mid,
            name,
            licence_no,
            legal_person,
            mcc,
            address,
        } => {
            let config = ServeConfig::load(&config)?;
            check_id("mid", &mid, 15)?;
            let name_chars = name.trim().chars().count();
            if name_chars == 0 || name_chars > MERCHANT_NAME_CHARS_MAX {
                return Err(format!("name: 1 to {MERCHANT_NAME_CHARS_MAX} characters").into());
            }
            let qualification = risk::merchant::Qualification {
                licence_no,
                legal_person,
                mcc,
                address,
            };
            qualification.check()?;
            let store = open_store(&config)?;
            let applied = runtime.block_on(risk::ops::apply(
                store.as_ref(),
                &mid,
                name.trim(),
                &qualification,
                risk::ops::Actor {
                    operator: ACTOR,
                    now_ms: switch::SystemClock.now_ms(),
                },
            ));
            store.close();
            let profile = applied?;
            println!(
                "merchant {mid}: {}; an operator approves it on the console before its \
                 terminals take cards",
                profile.state.as_str()
            );
            Ok(())
        }
        ProvisionCmd::Terminal {
            config,
            tid,
            mid,
            tmk,
            key_scheme,
            mac,
            single_mak,
        } => {
            let config = ServeConfig::load(&config)?;
            let asked = TerminalAsked {
                tid,
                mid,
                tmk: &tmk,
                key_scheme: &key_scheme,
                mac: &mac,
                single_mak,
            };
            let spec = terminal_spec(&config, asked, input)?;
            let store = open_store(&config)?;
            let added = runtime.block_on(add_terminal(store.as_ref(), &spec));
            store.close();
            added?;
            println!(
                "terminal {}: merchant {}, TMK {}, scheme {}, MAC {}; restart the node to take \
                 its sign-ins",
                spec.tid,
                spec.mid,
                spec.tmk,
                spec.scheme,
                mac.trim()
            );
            Ok(())
        }
        ProvisionCmd::User {
            config,
            username,
            role,
            mid,
            display_name,
        } => {
            let config = ServeConfig::load(&config)?;
            let role =
                store::web::Role::parse(&role).map_err(|_| "role: merchant, operator or admin")?;
            // The master key's components first, as for every command that opens the key store.
            let hsm = crate::serve::open_hsm(&config.hsm, input)?;
            let password = Zeroizing::new(read_line(input, "the password")?);
            let store = open_store(&config)?;
            let created = runtime.block_on(add_user(
                &store,
                hsm,
                web::auth::NewUser {
                    display_name: display_name.unwrap_or_else(|| username.clone()),
                    username,
                    password: password.clone(),
                    role,
                    mid,
                },
            ));
            store.close();
            let user = created?;
            println!(
                "user {} ({}): {}",
                user.id,
                user.username,
                user.role.as_str()
            );
            Ok(())
        }
    }
}

fn open_store(config: &ServeConfig) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    crate::serve::open_store(&config.database, config.database_schema.as_deref())
}

/// A MID or TID: its exact length, digits and capital letters (what fields 41 and 42 carry).
fn check_id(what: &str, text: &str, len: usize) -> Result<(), String> {
    if domain::is_code(text, len) {
        Ok(())
    } else {
        Err(format!(
            "{what}: {len} characters, digits and capital letters"
        ))
    }
}

/// Holds the key store's lock file while it lives, so that two imports at once cannot each
/// write the store without the other's key.
struct StoreLock(File);

impl StoreLock {
    fn take(key_store: &Path) -> Result<StoreLock, String> {
        let mut name = key_store.file_name().unwrap_or_default().to_owned();
        name.push(".lock");
        let path = key_store.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("key store lock {}: {e}", path.display()))?;
        file.lock()
            .map_err(|e| format!("key store lock {}: {e}", path.display()))?;
        Ok(StoreLock(file))
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn init(config: &ServeConfig, input: &mut dyn BufRead) -> CliResult {
    let hsm = &config.hsm;
    // As every later command will: a file named beside components would be written in clear.
    crate::serve::check_hsm(hsm)?;
    let _lock = StoreLock::take(&hsm.key_store_file)?;
    for (path, what) in [
        (hsm.master_key_file.as_ref(), "master key"),
        (Some(&hsm.key_store_file), "key store"),
    ] {
        if let Some(path) = path
            && path.exists()
        {
            return Err(format!(
                "{what} {}: already exists; init makes a new deployment's keys only",
                path.display()
            )
            .into());
        }
    }
    let Some(master_file) = &hsm.master_key_file else {
        // Held by custodians: each types in a component of their own making (64 random hex
        // digits), twice, and the key they make wraps the new key store. Nothing of it is
        // written.
        let master = crate::serve::master_key_confirmed(hsm, input)?;
        let store = SoftHsm::new(&master, Box::new(OsRandom)).export_store()?;
        crate::files::write_whole(&hsm.key_store_file, &store, 0o600)
            .map_err(|e| format!("key store {}: {e}", hsm.key_store_file.display()))?;
        println!(
            "an empty key store {} under the master key of {} components, check value {}; \
             each custodian keeps their component and its check value",
            hsm.key_store_file.display(),
            hsm.master_key_components.unwrap_or_default(),
            master.check_value()
        );
        return Ok(());
    };
    let mut bytes = Zeroizing::new([0_u8; 32]);
    OsRandom.fill(bytes.as_mut())?;
    let hex = Zeroizing::new(paycrypto::hex::encode(bytes.as_ref()));
    let master = MasterKey::from_hex(&hex)?;
    let store = SoftHsm::new(&master, Box::new(OsRandom)).export_store()?;
    crate::files::write_whole(master_file, hex.as_bytes(), 0o400)
        .map_err(|e| format!("master key {}: {e}", master_file.display()))?;
    if let Err(e) = crate::files::write_whole(&hsm.key_store_file, &store, 0o600) {
        // Nothing is wrapped under the new master key yet: take it back, so that init can be
        // run again once the key store's directory is fixed.
        let _ = std::fs::remove_file(master_file);
        return Err(format!("key store {}: {e}", hsm.key_store_file.display()).into());
    }
    println!(
        "master key {} (mode 0400) and an empty key store {}",
        master_file.display(),
        hsm.key_store_file.display()
    );
    Ok(())
}

/// Turns the terminal's echo off while it lives, when standard input is a terminal, so that a
/// component or password typed in is not shown on the screen (nor left in its scroll-back).
struct NoEcho(bool);

impl NoEcho {
    /// Refused at a terminal whose echo cannot be turned off: the secret would be shown.
    fn start(what: &str) -> Result<NoEcho, String> {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Ok(NoEcho(false));
        }
        restore_echo_on_interrupt();
        // Set first: a signal while `stty` runs must still turn the echo back on.
        ECHO_OFF.store(true, std::sync::atomic::Ordering::SeqCst);
        if !stty("-echo") {
            ECHO_OFF.store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(format!(
                "cannot turn the terminal's echo off (stty) to read {what}; nothing read"
            ));
        }
        eprint!("{what} (not shown): ");
        Ok(NoEcho(true))
    }
}

/// Whether a `NoEcho` has the terminal's echo off now.
static ECHO_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether the process stops itself on SIGINT and SIGTERM (`serve` starting to serve, not
/// `serve --check`): the echo restorer then acts on them only while echo is off.
static SIGNALS_OWNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that this process handles SIGINT and SIGTERM itself (a graceful stop), so that a
/// signal after the components are read is left to it, not taken as an interruption.
pub(crate) fn signals_owned() {
    SIGNALS_OWNED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Once per process, before echo first goes off: Ctrl-C (SIGINT) or SIGTERM turns the
/// terminal's echo back on before the process ends (exit status 130), as the signal's
/// default action would not: the shell would be left not showing what is typed. One that
/// comes while a component is read ends the command before anything is written: every
/// component is read and checked before the key store is touched. In a process that stops
/// itself on those signals (`signals_owned`), one that comes with echo on is left to it.
fn restore_echo_on_interrupt() {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| {
        let (ready, watching) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("echo-restorer".into())
            .spawn(move || {
                use tokio::signal::unix::{SignalKind, signal};
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build();
                let Ok(runtime) = runtime else {
                    let _ = ready.send(());
                    return;
                };
                runtime.block_on(async move {
                    // Both handlers are in place once created; only then may echo go off.
                    let signals = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    );
                    let _ = ready.send(());
                    let (Ok(mut interrupt), Ok(mut terminate)) = signals else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = interrupt.recv() => {}
                            _ = terminate.recv() => {}
                        }
                        let echo_off = ECHO_OFF.load(std::sync::atomic::Ordering::SeqCst);
                        if !echo_off && SIGNALS_OWNED.load(std::sync::atomic::Ordering::SeqCst) {
                            continue;
                        }
                        if echo_off {
                            stty("echo");
                        }
                        eprintln!();
                        eprintln!("interrupted");
                        std::process::exit(130);
                    }
                });
            });
        if spawned.is_ok() {
            let _ = watching.recv();
        }
    });
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if self.0 {
            stty("echo");
            ECHO_OFF.store(false, std::sync::atomic::Ordering::SeqCst);
            eprintln!();
        }
    }
}

/// `stty SETTING` on standard input's terminal; whether it worked.
fn stty(setting: &str) -> bool {
    std::process::Command::new("stty")
        .arg(setting)
        .stdin(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

/// One line of standard input without its line end; an empty input is an error.
pub(crate) fn read_line(input: &mut dyn BufRead, what: &str) -> Result<String, String> {
    let _no_echo = NoEcho::start(what)?;
    // Room for any component or password at once: a buffer that grew would leave copies of
    // the secret behind in freed memory.
    let mut line = String::with_capacity(1_024);
    let read = input
        .read_line(&mut line)
        .map_err(|e| format!("reading {what}: {e}"))?;
    if read == 0 {
        return Err(format!("standard input ended before {what}"));
    }
    let end = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(end);
    Ok(line)
}

/// A line answered in the open (not a secret), asked on standard error at a terminal.
fn read_answer(input: &mut dyn BufRead, question: &str) -> Result<String, String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("{question}: ");
    }
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if read == 0 {
        return Err("standard input ended before the answer: nothing stored".into());
    }
    Ok(line.trim().to_owned())
}

fn import_key(
    config: &ServeConfig,
    usage: KeyUsage,
    algorithm: KeyAlgorithm,
    components: u8,
    expected_kcv: Option<&str>,
    input: &mut dyn BufRead,
) -> CliResult {
    if !COMPONENTS.contains(&components) {
        return Err("components: 2 or 3".into());
    }
    // The master key's components first (if it is held so), as for every command that opens
    // the key store, and checked against it at once: custodians who mistyped one learn it
    // before anyone types a key's component. The key store is read again under its lock.
    let master = crate::serve::master_key(&config.hsm, input)?;
    crate::serve::open_hsm_under(&config.hsm, &master)?;
    let expected_kcv = expected_kcv
        .map(|kcv| {
            let kcv = kcv.trim().to_ascii_uppercase();
            let ok =
                (kcv.len() == 6 || kcv.len() == 8) && kcv.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then_some(kcv).ok_or("kcv: 6 or 8 hex digits")
        })
        .transpose()?;
    // Read and check every component before the key store is touched.
    let mut parts = Vec::with_capacity(usize::from(components));
    for n in 1..=components {
        let line = Zeroizing::new(read_line(input, &format!("component {n}"))?);
        let text = line.trim();
        let component =
            Key::from_hex(algorithm, text).map_err(|e| format!("component {n}: {e}"))?;
        parts.push(Zeroizing::new(
            paycrypto::hex::decode(text).map_err(|e| format!("component {n}: {e}"))?,
        ));
        // Six digits, as key paperwork gives them: enough for the custodian, less to go on.
        let kcv = component.kcv().to_string();
        println!("component {n}: KCV {}", kcv.get(..6).unwrap_or(&kcv));
    }
    let key = combine(algorithm, &parts)?;
    let hex = Zeroizing::new(paycrypto::hex::encode(&key));
    let new_key = Key::from_hex(algorithm, &hex)?;
    let kcv = new_key.kcv().to_string();
    if let Some(expected) = &expected_kcv {
        // Paperwork gives six digits or all eight: either is the start of the KCV.
        if !kcv.to_ascii_uppercase().starts_with(expected.as_str()) {
            return Err(format!(
                "the key's KCV is {kcv}, not {expected}: a component was mistyped; nothing \
                 stored"
            )
            .into());
        }
    }
    // Refused as the key store would refuse it, before anyone is asked to confirm it.
    if new_key.has_weak_des_part() {
        return Err(paycrypto::HsmError::WeakKey.to_string().into());
    }
    if expected_kcv.is_none() {
        // No KCV to check the key against: the custodians' checks of their components' KCVs
        // (printed above) come before the key is stored, not after.
        println!("key: KCV {}", kcv.get(..6).unwrap_or(&kcv));
        let answer = read_answer(
            input,
            "each custodian's component KCV matches their paperwork: type yes to store the key",
        )?;
        if !answer.eq_ignore_ascii_case("yes") {
            return Err("not confirmed: nothing stored".into());
        }
    }
    let _lock = StoreLock::take(&config.hsm.key_store_file)?;
    let hsm = crate::serve::open_hsm_under(&config.hsm, &master)?;
    // A key is imported once: the same components entered again (a run that looked failed)
    // would give a second handle of one key, and two terminals given it could each read the
    // other's working keys; a zone PIN key entered again as a TMK, likewise.
    for handle in hsm.stored_handles() {
        let Ok(info) = hsm.key_info(handle) else {
            continue;
        };
        if info.algorithm == algorithm
            && info.len_bytes == new_key.len()
            && info.kcv == new_key.kcv()
        {
            return Err(format!(
                "this key (KCV {kcv}) is stored already, as {} {handle}: a key is imported \
                 once; nothing stored",
                info.usage
            )
            .into());
        }
    }
    let handle = hsm.import_key(usage, algorithm, &hex)?;
    let exported = hsm.export_store()?;
    crate::files::write_whole(&config.hsm.key_store_file, &exported, 0o600)
        .map_err(|e| format!("key store {}: {e}", config.hsm.key_store_file.display()))?;
    println!("{usage} {handle}: KCV {kcv}");
    Ok(())
}

/// The key `parts` make (XORed), refused when it is weaker than it looks: a 3DES key of
/// single length, parts of different lengths, two parts alike (a custodian's typed twice, or
/// copied: the key is then known to fewer people than it should be, or is all zeros), a part of
/// zeros (which adds nothing: the others alone make the key), a key of zeros, or a double- or
/// triple-length key with two equal halves (single DES in effect).
fn combine(
    algorithm: KeyAlgorithm,
    parts: &[Zeroizing<Vec<u8>>],
) -> Result<Zeroizing<Vec<u8>>, String> {
    let first = parts.first().ok_or("no components")?;
    let len = first.len();
    if algorithm == KeyAlgorithm::Des && len != 16 && len != 24 {
        return Err(format!(
            "a 3DES key's components are 32 or 48 hex digits, these are {}",
            len * 2
        ));
    }
    for (i, part) in parts.iter().enumerate() {
        if part.len() != len {
            return Err(format!(
                "component {}: {} bytes, component 1 has {len}",
                i + 1,
                part.len()
            ));
        }
        if same_key(algorithm, part, &vec![0; len]) {
            return Err(format!(
                "component {} is zeros: it adds nothing, and the others alone make the key",
                i + 1
            ));
        }
        if let Some(j) = parts
            .get(..i)
            .and_then(|before| before.iter().position(|p| same_key(algorithm, p, part)))
        {
            return Err(format!(
                "components {} and {} are the same: each custodian keeps their own",
                j + 1,
                i + 1
            ));
        }
    }
    let mut key = Zeroizing::new(vec![0_u8; len]);
    for part in parts {
        for (k, b) in key.iter_mut().zip(part.iter()) {
            *k ^= b;
        }
    }
    if same_key(algorithm, &key, &vec![0; len]) {
        return Err("the components make a key of zeros".to_owned());
    }
    if algorithm == KeyAlgorithm::Des {
        let halves: Vec<&[u8]> = key.chunks(8).collect();
        let repeats = halves
            .windows(2)
            .any(|w| matches!(w, [a, b] if same_key(algorithm, a, b)));
        if repeats {
            return Err(
                "the components make a key with two equal adjacent halves: single DES in effect"
                    .to_owned(),
            );
        }
    }
    Ok(key)
}

/// Whether two keys (or key parts) are the same key: for DES, whatever their parity bits
/// (the low bit of each byte, which DES ignores and this crate does not enforce).
fn same_key(algorithm: KeyAlgorithm, a: &[u8], b: &[u8]) -> bool {
    let mask = if algorithm == KeyAlgorithm::Des {
        0xFE
    } else {
        0xFF
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x & mask == y & mask)
}

/// A terminal as `provision terminal` asks for it.
struct TerminalAsked<'a> {
    tid: String,
    mid: String,
    tmk: &'a str,
    key_scheme: &'a str,
    mac: &'a str,
    single_mak: bool,
}

/// The terminal as asked for, checked against its key (the key store opened with what
/// `input` gives it): a TMK of the family its scheme needs, a MAC the scheme's keys can make.
fn terminal_spec(
    config: &ServeConfig,
    asked: TerminalAsked<'_>,
    input: &mut dyn BufRead,
) -> Result<switch::TerminalSpec, Box<dyn std::error::Error>> {
    let TerminalAsked {
        tid,
        mid,
        tmk,
        key_scheme,
        mac,
        single_mak,
    } = asked;
    check_id("tid", &tid, 8)?;
    check_id("mid", &mid, 15)?;
    let scheme: KeyScheme = key_scheme
        .trim()
        .parse()
        .map_err(|_| "key scheme: 001, 003, 004 or 006")?;
    let mac: MacAlgorithm = mac
        .trim()
        .parse()
        .map_err(|_| "mac: x919, cup-ecb or sm4")?;
    let tmk: KeyHandle = tmk.trim().parse()?;
    let sm4_scheme = scheme.tmk_algorithm() == KeyAlgorithm::Sm4;
    if sm4_scheme != (mac == MacAlgorithm::Sm4) {
        return Err("mac: sm4 goes with key scheme 006, and scheme 006 with sm4".into());
    }
    if single_mak && (mac != MacAlgorithm::CupEcb || sm4_scheme) {
        return Err("single-mak: for a CUP ECB terminal under scheme 001, 003 or 004".into());
    }
    let hsm = crate::serve::open_hsm(&config.hsm, input)?;
    let info = hsm.key_info(tmk)?;
    if info.usage != KeyUsage::Tmk {
        return Err(format!("tmk: {tmk} is a {}, not a TMK", info.usage).into());
    }
    if info.algorithm != scheme.tmk_algorithm() {
        return Err(format!(
            "tmk: {tmk} is a {} key; key scheme {scheme} needs a {} TMK",
            info.algorithm,
            scheme.tmk_algorithm()
        )
        .into());
    }
    // The same rule the HSM keeps at sign-in: double-length keys never travel under 56 bits.
    // (A key store written before key components were checked may hold a double-length key
    // with equal halves: single DES too.)
    if info.algorithm == KeyAlgorithm::Des && info.single_des && scheme != KeyScheme::Single {
        return Err(format!(
            "tmk: {tmk} is a single DES key (8 bytes, or halves that are equal); key scheme \
             {scheme} carries double-length keys and needs a double-length TMK (or scheme 001)"
        )
        .into());
    }
    Ok(switch::TerminalSpec {
        tid,
        mid,
        tmk,
        scheme,
        mac,
        mak: if single_mak {
            MakLength::Single
        } else {
            MakLength::Double
        },
        batch_no: 1,
    })
}

/// Writes a new terminal: its merchant must exist, and its TID be new (a terminal's batch and
/// keys are never reset by provisioning it again; the console suspends or closes it).
async fn add_terminal(store: &dyn Store, spec: &switch::TerminalSpec) -> CliResult {
    match risk::ops::merchant_state(store, &spec.mid)? {
        None => {
            return Err(format!(
                "merchant {}: not provisioned (provision merchant first)",
                spec.mid
            )
            .into());
        }
        Some(store::risk::MerchantState::Closed) => {
            return Err(format!("merchant {}: closed; it takes no terminals", spec.mid).into());
        }
        Some(_) => {}
    }
    if store.terminal(&spec.tid)?.is_some() {
        return Err(format!("terminal {}: already provisioned", spec.tid).into());
    }
    // One TMK per terminal: field 62 carries the working keys under it in the clear of the
    // network, so a terminal sharing another's TMK could read that one's PIN and MAC keys.
    let tmk = switch::handle_bytes(spec.tmk);
    if let Some(other) = store
        .terminals()?
        .into_iter()
        .find(|t| t.tmk_wrapped == tmk)
    {
        return Err(format!(
            "tmk: {} is terminal {}'s; each terminal needs a TMK of its own (provision key \
             --usage tmk)",
            spec.tmk, other.tid
        )
        .into());
    }
    // Written only if still new: another provisioning of the TID since the check above
    // fails here rather than being overwritten (or overwriting it).
    match store.submit(vec![switch::new_terminal_record(spec)])?.await {
        Ok(()) => {}
        Err(store::StoreError::Constraint { .. }) => {
            return Err(format!("terminal {}: already provisioned", spec.tid).into());
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// Refunds are the running node's: a provisioning command has none to make.
struct NoRefunds;

impl resolve::cases::RefundExecutor for NoRefunds {
    fn refund<'a>(
        &'a self,
        _original_rrn: &'a str,
        _amount_fen: i64,
        _idempotency_key: &'a str,
    ) -> resolve::cases::RefundFuture<'a> {
        Box::pin(async {
            Err(switch::BackOfficeError::Store(store::StoreError::Backend {
                message: "refunds are made by a running node".to_owned(),
            }))
        })
    }
}

async fn add_user(
    store: &Arc<dyn Store>,
    hsm: Arc<SoftHsm>,
    new: web::auth::NewUser,
) -> Result<store::web::UserRow, Box<dyn std::error::Error>> {
    let portal = web::Web::new(
        Arc::clone(store),
        hsm as Arc<dyn Hsm>,
        Arc::new(domain::IssuerDirectory::embedded()?),
        Arc::new(switch::SystemClock),
        Arc::new(NoRefunds),
    );
    web::create_user(&portal, ACTOR, new)
        .await
        .map_err(|e| e.to_string().into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parts(hex: &[&str]) -> Vec<Zeroizing<Vec<u8>>> {
        hex.iter()
            .map(|h| Zeroizing::new(paycrypto::hex::decode(h).unwrap()))
            .collect()
    }

    fn combined(algorithm: KeyAlgorithm, hex: &[&str]) -> Result<String, String> {
        combine(algorithm, &parts(hex)).map(|k| paycrypto::hex::encode(&k))
    }

    #[test]
    fn components_are_xored() {
        assert_eq!(
            combined(
                KeyAlgorithm::Des,
                &[
                    "0123456789ABCDEFFEDCBA9876543210",
                    "1111111111111111F0F0F0F0F0F0F0F0"
                ]
            )
            .unwrap(),
            "1032547698BADCFE0E2C4A6886A4C2E0"
        );
        assert!(
            combined(
                KeyAlgorithm::Sm4,
                &["00112233445566778899AABBCCDDEEFF", "0F"]
            )
            .is_err()
        );
    }

    #[test]
    fn weak_keys_are_refused() {
        let a = "0123456789ABCDEFFEDCBA9876543210";
        let b = "1111111111111111F0F0F0F0F0F0F0F0";
        // The same component twice.
        let err = combined(KeyAlgorithm::Des, &[a, b, a]).unwrap_err();
        assert!(err.contains("components 1 and 3"), "{err}");
        // Three distinct parts that cancel out.
        let c = "1032547698BADCFE0E2C4A6886A4C2E0";
        let err = combined(KeyAlgorithm::Des, &[a, b, c]).unwrap_err();
        assert!(err.contains("zeros"), "{err}");
        // A component of zeros (parity bits aside): the other alone is the key.
        let err =
            combined(KeyAlgorithm::Des, &["01010101010101010101010101010101", a]).unwrap_err();
        assert!(err.contains("component 1 is zeros"), "{err}");
        // Single DES called 3DES.
        let err =
            combined(KeyAlgorithm::Des, &["0123456789ABCDEF", "1111111111111111"]).unwrap_err();
        assert!(err.contains("32 or 48"), "{err}");
        // Halves that come out equal: K1 = K2.
        let err = combined(
            KeyAlgorithm::Des,
            &[
                "0123456789ABCDEF0123456789ABCDEF",
                "11111111111111111111111111111111",
            ],
        )
        .unwrap_err();
        assert!(err.contains("equal"), "{err}");
        // Triple length with K2 = K3.
        let err = combined(
            KeyAlgorithm::Des,
            &[
                "0123456789ABCDEFFEDCBA9876543210FEDCBA9876543210",
                "111111111111111122222222222222222222222222222222",
            ],
        )
        .unwrap_err();
        assert!(err.contains("equal"), "{err}");
        // DES ignores the parity bits (each byte's lowest): parts, zeros and halves that
        // differ only there are the same key.
        let err =
            combined(KeyAlgorithm::Des, &[a, "0023456789ABCDEFFEDCBA9876543211"]).unwrap_err();
        assert!(err.contains("components 1 and 2"), "{err}");
        let err = combined(
            KeyAlgorithm::Des,
            &[a, b, "1133557799BBDDFF0F2D4B6987A5C3E1"],
        )
        .unwrap_err();
        assert!(err.contains("zeros"), "{err}");
        let err = combined(
            KeyAlgorithm::Des,
            &[
                "0123456789ABCDEF0023456789ABCDEF",
                "11111111111111111111111111111111",
            ],
        )
        .unwrap_err();
        assert!(err.contains("equal"), "{err}");
        // An SM4 key has no halves to compare.
        assert!(
            combined(
                KeyAlgorithm::Sm4,
                &[
                    "0123456789ABCDEF0123456789ABCDEF",
                    "11111111111111111111111111111111"
                ]
            )
            .is_ok()
        );
    }

    #[test]
    fn a_closed_merchant_takes_no_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            store::SqliteStore::open(&store::SqliteConfig::new(dir.path().join("j.db"))).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let merchant = |status| {
            store::Record::UpsertMerchant(store::MerchantRow {
                mid: "898110000000088".to_owned(),
                name: "已关闭商户".to_owned(),
                status,
                mcc: "5411".to_owned(),
            })
        };
        let spec = switch::TerminalSpec {
            tid: "70000088".to_owned(),
            mid: "898110000000088".to_owned(),
            tmk: "key-1".parse().unwrap(),
            scheme: KeyScheme::DoubleWithTdk,
            mac: MacAlgorithm::X919,
            mak: MakLength::Double,
            batch_no: 1,
        };
        runtime
            .block_on(store.submit(vec![merchant(store::Status::Closed)]).unwrap())
            .unwrap();
        let err = runtime
            .block_on(add_terminal(&store, &spec))
            .unwrap_err()
            .to_string();
        assert!(err.contains("closed"), "{err}");
        assert!(store.terminal("70000088").unwrap().is_none());
        runtime
            .block_on(
                store
                    .submit(vec![merchant(store::Status::Suspended)])
                    .unwrap(),
            )
            .unwrap();
        runtime.block_on(add_terminal(&store, &spec)).unwrap();
        assert!(store.terminal("70000088").unwrap().is_some());
        store.close();
    }
}
