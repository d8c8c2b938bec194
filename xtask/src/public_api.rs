//! Third-party types in the publishable libraries' public API (issue 19 point 2, CONTRIBUTING.md
//! "Public surface"): a type or trait of another crate appears in a public signature only when the
//! crate README lists it, with its reason, in the section `## Third-party types in the public API`,
//! and the crate re-exports it (the item, or the crate that holds it) where the README's line says,
//! so that a caller names it without a dependency of its own. A `pub use` of a whole crate counts
//! as deliberate when a listed item is re-exported through it; the path inside that crate is not
//! checked (this crate's JSON does not hold the other crate's modules).
//!
//! rustdoc's JSON output (unstable: `RUSTC_BOOTSTRAP=1` on the stable toolchain, in a target
//! directory of its own so that the changed environment does not throw the main build cache away)
//! is read as plain `serde_json::Value` rather than through the `rustdoc-types` crate, whose format
//! version would have to match the toolchain's exactly: the walk follows the items it knows by
//! name (modules, `use`, structs, enums, traits, impls) and collects every path below them
//! (`resolved_path`, and the `trait` of bounds, `dyn` types and impls) wherever it sits.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cargo, run_command};

/// The README section that lists a crate's deliberate third-party types.
const SECTION: &str = "## Third-party types in the public API";

/// Crates whose types are always fine in a public signature: the standard library's.
const STANDARD_CRATES: &[&str] = &["std", "core", "alloc"];

/// The prefix of the workspace's own crates, whose types are always fine too.
const OWN_CRATE_PREFIX: &str = "mainstay_";

/// One publishable library, as cargo metadata describes it.
struct Library {
    package: String,
    crate_name: String,
    readme: PathBuf,
}

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    let root = crate::workspace_root();
    let metadata = crate::ci::workspace_metadata()?;
    let libraries: Vec<Library> = crate::ci::published_packages(&metadata)
        .into_iter()
        .map(library)
        .collect::<Result<_>>()?;
    if libraries.is_empty() {
        bail!("cargo metadata lists no publishable library in the workspace");
    }
    let target = crate::ci::target_directory()?.join("rustdoc-json");
    let mut problems = Vec::new();
    let mut listed_count = 0;
    for library in &libraries {
        run_command(
            cargo()
                // Cargo's own `--output-format json` (rather than rustdoc's, after `--`) lets cargo
                // see that the JSON is up to date: a warm run documents nothing again.
                .args([
                    "rustdoc",
                    "-Z",
                    "unstable-options",
                    "--output-format",
                    "json",
                    "--package",
                    &library.package,
                    "--lib",
                    "--all-features",
                    "--locked",
                ])
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_DIR", &target),
        )?;
        let json_path = target
            .join("doc")
            .join(format!("{}.json", library.crate_name));
        let text = std::fs::read_to_string(&json_path)
            .with_context(|| format!("reading {}", json_path.display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", json_path.display()))?;
        let used = third_party_uses(&json)
            .with_context(|| format!("reading rustdoc's JSON of {}", library.package))?;
        let readme_name = library
            .readme
            .strip_prefix(&root)
            .unwrap_or(&library.readme)
            .display()
            .to_string();
        let readme = std::fs::read_to_string(&library.readme)
            .with_context(|| format!("reading {readme_name}"))?;
        // A README without a well-formed list is one more problem; the used paths are still shown.
        let listed = listed_items(&readme).unwrap_or_else(|error| {
            problems.push(format!("{}: {readme_name}: {error:#}", library.package));
            Vec::new()
        });
        listed_count += listed.len();
        let mut through = BTreeSet::new();
        for item in &listed {
            match verify_reexport(&json, item) {
                Ok(module) => through.extend(module),
                Err(error) => problems.push(format!(
                    "{}: {readme_name}:{}: `{}` is listed as re-exported as `{}`, but {error:#}; add the `pub use` (of the item, or of the crate that holds it) or correct the path",
                    library.package, item.line, item.pattern, item.reexport
                )),
            }
        }
        let (unlisted, stale) = compare(&used, &listed, &through);
        for (path, places) in unlisted {
            problems.push(format!(
                "{}: `{path}` is in the public API but not listed in {readme_name} (\"{SECTION}\"); used at {}",
                library.package,
                shown_places(places)
            ));
        }
        for item in stale {
            problems.push(format!(
                "{}: {readme_name}:{} lists `{}`, which the public API no longer uses; take it off the list",
                library.package, item.line, item.pattern
            ));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if problems.is_empty() {
        eprintln!(
            "xtask surface: the public API of {} libraries uses only std, mainstay and the {listed_count} listed third-party item(s), each re-exported where its README says ({elapsed:.1}s)",
            libraries.len()
        );
        Ok(())
    } else {
        bail!(
            "third-party types in the public API that the crate README does not list, listed ones no longer used, or listed ones not re-exported where the README says ({elapsed:.1}s); either list each with its re-export and reason in the README's \"{SECTION}\" and re-export it, or keep it out of the public API:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// The package name, library crate name and README of one package entry of cargo metadata.
fn library(package: &Value) -> Result<Library> {
    let name = package["name"]
        .as_str()
        .context("a package of cargo metadata has no name")?;
    let crate_name = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "lib"))
        })
        .and_then(|target| target["name"].as_str())
        .with_context(|| format!("{name} has no library target"))?
        .replace('-', "_");
    let directory = package["manifest_path"]
        .as_str()
        .and_then(|manifest| Path::new(manifest).parent())
        .with_context(|| format!("{name} has no manifest path"))?;
    let readme = directory.join(package["readme"].as_str().unwrap_or("README.md"));
    Ok(Library {
        package: name.to_owned(),
        crate_name,
        readme,
    })
}

/// At most a few of the places, and how many more.
fn shown_places(places: &BTreeSet<String>) -> String {
    const SHOWN: usize = 4;
    let mut shown: Vec<&str> = places.iter().take(SHOWN).map(String::as_str).collect();
    let more = places.len().saturating_sub(SHOWN);
    let more = format!("and {more} more");
    if places.len() > SHOWN {
        shown.push(&more);
    }
    shown.join(", ")
}

/// The third-party paths (full path where the item is defined, e.g. `bytes::bytes::Bytes`) that
/// the public items of a crate use, each with the public items where it was found.
fn third_party_uses(json: &Value) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let Some(version) = json["format_version"].as_u64() else {
        bail!("no format_version: not rustdoc's JSON output, or a shape this check does not know");
    };
    let (Some(index), Some(paths), Some(crates), Some(root)) = (
        json["index"].as_object(),
        json["paths"].as_object(),
        json["external_crates"].as_object(),
        id_key(&json["root"]),
    ) else {
        bail!(
            "rustdoc JSON format version {version} has no index, paths, external_crates or root: update xtask/src/public_api.rs to its shape"
        );
    };
    let mut walk = Walk {
        index,
        paths,
        crates,
        visited: HashSet::new(),
        uses: BTreeMap::new(),
        paths_seen: 0,
    };
    let root_name = index
        .get(&root)
        .and_then(|item| item["name"].as_str())
        .unwrap_or("crate")
        .to_owned();
    walk.item(&root, &root_name)?;
    if walk.paths_seen == 0 {
        bail!(
            "no type path found in any public item (rustdoc JSON format version {version}): its shape is not what xtask/src/public_api.rs understands"
        );
    }
    Ok(walk.uses)
}

/// An id of the JSON (a number in format 57, a string in older formats) as the key of `index`
/// and `paths`.
fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) => Some(text.clone()),
        _ => None,
    }
}

struct Walk<'a> {
    index: &'a serde_json::Map<String, Value>,
    paths: &'a serde_json::Map<String, Value>,
    crates: &'a serde_json::Map<String, Value>,
    visited: HashSet<String>,
    uses: BTreeMap<String, BTreeSet<String>>,
    paths_seen: usize,
}

impl Walk<'_> {
    /// One item reachable from the root, named `name` (its public path, or a description of the
    /// impl it sits in).
    fn item(&mut self, id: &str, name: &str) -> Result<()> {
        if !self.visited.insert(id.to_owned()) {
            return Ok(());
        }
        let Some(item) = self.index.get(id) else {
            // Not in the index: an item of another crate reached by a re-export.
            self.record(id, name);
            return Ok(());
        };
        if item["crate_id"].as_u64() != Some(0) {
            self.record(id, name);
            return Ok(());
        }
        let Some((kind, inner)) = item["inner"]
            .as_object()
            .and_then(|inner| inner.iter().next())
        else {
            bail!("item {id} ({name}) has no inner kind");
        };
        let child = |child: &Value| -> String {
            match child.as_str() {
                Some(child) => format!("{name}::{child}"),
                None => name.to_owned(),
            }
        };
        match kind.as_str() {
            "module" => {
                for member in ids(&inner["items"]) {
                    let member_name = self.index.get(&member).map_or_else(
                        || name.to_owned(),
                        |member_item| child(&member_item["name"]),
                    );
                    if self.is_public_member(&member) {
                        self.item(&member, &member_name)?;
                    }
                }
            }
            "use" => {
                let source = inner["source"].as_str().unwrap_or("?");
                let Some(target) = id_key(&inner["id"]) else {
                    // A re-export rustdoc could not resolve (a primitive, or a macro): no type.
                    return Ok(());
                };
                let glob = inner["is_glob"].as_bool() == Some(true);
                let local = self
                    .index
                    .get(&target)
                    .is_some_and(|target| target["crate_id"].as_u64() == Some(0));
                if !local {
                    self.record(&target, &format!("pub use {source} in {name}"));
                } else if glob {
                    // `pub use module::*`: the module's items appear here.
                    let items = self.index[&target]["inner"]["module"]["items"].clone();
                    for member in ids(&items) {
                        let member_name = self
                            .index
                            .get(&member)
                            .map_or_else(|| name.to_owned(), |item| child(&item["name"]));
                        if self.is_public_member(&member) {
                            self.item(&member, &member_name)?;
                        }
                    }
                } else {
                    let alias = child(&inner["name"]);
                    self.item(&target, &alias)?;
                }
            }
            "struct" | "union" => {
                let kind_value = inner.get("kind").unwrap_or(inner);
                self.types(&inner["generics"], name);
                // A union's fields sit beside its generics; a struct's under `kind`.
                for field in ids(&kind_value["plain"]["fields"])
                    .into_iter()
                    .chain(ids(&kind_value["tuple"]))
                    .chain(ids(&inner["fields"]))
                {
                    self.field(&field, name, false);
                }
                self.impls(&inner["impls"], name)?;
            }
            "enum" => {
                self.types(&inner["generics"], name);
                for variant in ids(&inner["variants"]) {
                    let Some(variant_item) = self.index.get(&variant) else {
                        continue;
                    };
                    let variant_name = child(&variant_item["name"]);
                    let fields = &variant_item["inner"]["variant"]["kind"];
                    for field in ids(&fields["tuple"])
                        .into_iter()
                        .chain(ids(&fields["struct"]["fields"]))
                    {
                        self.field(&field, &variant_name, true);
                    }
                }
                self.impls(&inner["impls"], name)?;
            }
            "trait" => {
                self.types(&inner["generics"], name);
                self.types(&inner["bounds"], name);
                for member in ids(&inner["items"]) {
                    if let Some(member_item) = self.index.get(&member) {
                        let member_name = child(&member_item["name"]);
                        self.types(&member_item["inner"], &member_name);
                    }
                }
                self.impls(&inner["implementations"], name)?;
            }
            "impl" => self.impl_block(inner, name)?,
            "extern_crate" => {
                // `pub extern crate other;`: the whole crate is re-exported.
                let crate_name = inner["name"].as_str().unwrap_or("?");
                if !is_allowed_crate(crate_name) {
                    self.uses
                        .entry(crate_name.to_owned())
                        .or_default()
                        .insert(format!("pub extern crate {crate_name} in {name}"));
                }
            }
            "macro" | "proc_macro" | "primitive" => {}
            // Functions, type aliases, constants, statics, trait aliases, fields: their types.
            _ => self.types(inner, name),
        }
        Ok(())
    }

    /// Whether a member of a module is public (a re-export's visibility is its own).
    fn is_public_member(&self, id: &str) -> bool {
        self.index
            .get(id)
            .is_none_or(|item| item["visibility"] == "public")
    }

    /// A struct field or an enum variant's field: its type, when it is public. A variant's fields
    /// are as public as the enum, with the visibility `default`, which on a struct field means
    /// private.
    fn field(&mut self, id: &str, owner: &str, in_variant: bool) {
        let Some(field) = self.index.get(id) else {
            return;
        };
        if field["visibility"] == "public" || in_variant && field["visibility"] == "default" {
            let name = match field["name"].as_str() {
                Some(name) => format!("{owner}::{name}"),
                None => owner.to_owned(),
            };
            self.types(&field["inner"], &name);
        }
    }

    /// The impl blocks of a type or trait.
    fn impls(&mut self, ids_value: &Value, owner: &str) -> Result<()> {
        for id in ids(ids_value) {
            if !self.visited.insert(id.clone()) {
                continue;
            }
            if let Some(impl_item) = self.index.get(&id) {
                self.impl_block(&impl_item["inner"]["impl"], owner)?;
            }
        }
        Ok(())
    }

    /// One impl block: none of it when rustdoc made it up (auto traits) or it is a blanket impl of
    /// another crate; the trait with its arguments, the generics and every item of a trait impl;
    /// the generics and the public items of an inherent impl.
    fn impl_block(&mut self, block: &Value, owner: &str) -> Result<()> {
        if block["is_synthetic"] == true || !block["blanket_impl"].is_null() {
            return Ok(());
        }
        let trait_path = &block["trait"];
        let is_trait_impl = !trait_path.is_null();
        // The type the impl is for, by its full path when it has one (a trait's impls name theirs).
        let owner = id_key(&block["for"]["resolved_path"]["id"])
            .and_then(|id| self.full_path(&id))
            .unwrap_or_else(|| owner.to_owned());
        let name = if is_trait_impl {
            let trait_name = id_key(&trait_path["id"])
                .and_then(|id| self.full_path(&id))
                .or_else(|| trait_path["path"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".to_owned());
            format!("impl {trait_name} for {owner}")
        } else {
            owner.to_owned()
        };
        // The trait path is walked as the value of the `trait` key.
        let header = serde_json::json!({
            "trait": trait_path,
            "generics": block["generics"],
            "for": block["for"],
        });
        self.types(&header, &name);
        for member in ids(&block["items"]) {
            let Some(member_item) = self.index.get(&member) else {
                continue;
            };
            if !is_trait_impl && member_item["visibility"] != "public" {
                continue;
            }
            let member_name = match member_item["name"].as_str() {
                Some(member) if is_trait_impl => format!("{name}: {member}"),
                Some(member) => format!("{name}::{member}"),
                None => name.clone(),
            };
            self.types(&member_item["inner"], &member_name);
        }
        Ok(())
    }

    /// Every path inside a type, signature, bound or generics: the value of a `resolved_path` key
    /// (types) or of a `trait` key (bounds, `dyn` and `impl Trait` types, impls, qualified paths).
    fn types(&mut self, value: &Value, place: &str) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if (key == "resolved_path" || key == "trait")
                        && let Some(id) = id_key(&child["id"])
                    {
                        self.paths_seen += 1;
                        self.record(&id, place);
                    }
                    self.types(child, place);
                }
            }
            Value::Array(values) => {
                for child in values {
                    self.types(child, place);
                }
            }
            _ => {}
        }
    }

    /// Notes the item `id` as used at `place` when it belongs to a third-party crate. An id that
    /// the `paths` table does not know is a private item of this crate (a macro's hidden helper).
    fn record(&mut self, id: &str, place: &str) {
        let Some(entry) = self.paths.get(id) else {
            return;
        };
        let Some(crate_id) = entry["crate_id"].as_u64() else {
            return;
        };
        if crate_id == 0 {
            return;
        }
        let crate_name = self
            .crates
            .get(&crate_id.to_string())
            .and_then(|entry| entry["name"].as_str())
            .unwrap_or("?");
        if is_allowed_crate(crate_name) {
            return;
        }
        // A path through a `__`-named module is a macro's private plumbing (pin-project-lite's
        // `__private` in the `Unpin` impls it writes, utoipa's `__dev` beside `ToSchema`): no caller
        // names it, and the public trait the macro implements is reported on its own.
        if let Some(path) = self.full_path(id)
            && !path.split("::").any(|segment| segment.starts_with("__"))
        {
            self.uses.entry(path).or_default().insert(place.to_owned());
        }
    }

    /// The full path of an item of the `paths` table, e.g. `bytes::bytes::Bytes`.
    fn full_path(&self, id: &str) -> Option<String> {
        let segments: Vec<&str> = self.paths.get(id)?["path"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        Some(segments.join("::"))
    }
}

/// The ids of a JSON array of ids (nulls, for stripped tuple fields, left out).
fn ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(id_key)
        .collect()
}

fn is_allowed_crate(name: &str) -> bool {
    STANDARD_CRATES.contains(&name) || name.starts_with(OWN_CRATE_PREFIX)
}

/// One bullet of a README's list: the path where the item is defined (or a `crate::*` glob), the
/// path users import it from (through this crate's re-export), and the line the bullet starts on.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    pattern: String,
    reexport: String,
    line: usize,
}

/// What a bullet says between the item's path and its reason: where users import it from.
const REEXPORTED_AS: &str = "(re-exported as `";

/// The items listed in a README's [`SECTION`]: one bullet per item, the full path in backticks,
/// where users import it from, then its reason (``- `prometheus_client::registry::Registry`
/// (re-exported as `mainstay_x::prometheus_client::registry::Registry`): why``); or the line
/// `None.`. A bullet may go on over indented lines.
fn listed_items(readme: &str) -> Result<Vec<Listed>> {
    let mut lines = readme.lines().enumerate();
    if !lines.any(|(_, line)| line.trim_end() == SECTION) {
        bail!(
            "no section \"{SECTION}\": add it, with one bullet per deliberate third-party type (\"- `crate::path::Type` (re-exported as `this_crate::...`): why\") or the line \"None.\""
        );
    }
    // Each bullet with the line it starts on, its continuation lines joined to it.
    let mut bullets: Vec<(usize, String)> = Vec::new();
    let mut none = false;
    let mut in_bullet = false;
    for (index, line) in lines {
        if line.starts_with("# ") || line.starts_with("## ") {
            break;
        }
        if let Some(bullet) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
            bullets.push((index + 1, bullet.to_owned()));
            in_bullet = true;
        } else if in_bullet && line.starts_with("  ") && !line.trim().is_empty() {
            if let Some((_, text)) = bullets.last_mut() {
                text.push(' ');
                text.push_str(line.trim());
            }
        } else {
            in_bullet = false;
            none |= line.trim() == "None.";
        }
    }
    let mut listed = Vec::new();
    for (number, bullet) in bullets {
        let Some((pattern, rest)) = bullet
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
        else {
            bail!("line {number}: a bullet starts with the item's full path in backticks");
        };
        let Some((reexport, reason)) = rest
            .trim_start()
            .strip_prefix(REEXPORTED_AS)
            .and_then(|rest| rest.split_once("`)"))
        else {
            bail!(
                "line {number}: `{pattern}` needs where users import it from after the path, \"{REEXPORTED_AS}this_crate::...`)\""
            );
        };
        let reason = reason
            .trim_start()
            .trim_start_matches([':', '-', '—'])
            .trim();
        if reason.is_empty() {
            bail!("line {number}: `{pattern}` needs its reason after the path");
        }
        let is_path = |path: &str| {
            path.split("::").all(|segment| {
                !segment.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        };
        if !is_path(pattern.strip_suffix("::*").unwrap_or(pattern)) {
            bail!(
                "line {number}: `{pattern}` is not a full path (`crate::module::Item`) or a crate glob (`crate::*`)"
            );
        }
        if !is_path(reexport) {
            bail!(
                "line {number}: `{pattern}` is re-exported as `{reexport}`, which is not a path (`this_crate::other_crate::Item`)"
            );
        }
        listed.push(Listed {
            pattern: pattern.to_owned(),
            reexport: reexport.to_owned(),
            line: number,
        });
    }
    match (none, listed.is_empty()) {
        (true, false) => bail!("the section \"{SECTION}\" says \"None.\" and lists items"),
        (false, true) => {
            bail!("the section \"{SECTION}\" lists no item and does not say \"None.\"")
        }
        _ => Ok(listed),
    }
}

/// Where a README's import path leads in the crate's rustdoc JSON.
#[derive(Debug, PartialEq, Eq)]
enum Reexport {
    /// A `pub use` of another crate or one of its modules (`pub use tower;`), with its full path
    /// where defined (`tower`) and the rest of the import path, inside it (`Layer`). rustdoc's JSON
    /// of this crate does not hold the other crate's modules: the rest is not checked.
    Module { path: String, rest: String },
    /// A `pub use` of one item of another crate, with its full path where defined.
    Item(String),
}

/// Follows an import path (`mainstay_x::tower::Layer`) from the crate root through public
/// modules to the public `use` it names.
fn resolve_reexport(json: &Value, import: &str) -> Result<Reexport> {
    let (Some(index), Some(paths), Some(root)) = (
        json["index"].as_object(),
        json["paths"].as_object(),
        id_key(&json["root"]),
    ) else {
        bail!("rustdoc's JSON has no index, paths or root");
    };
    let crate_name = index
        .get(&root)
        .and_then(|root| root["name"].as_str())
        .unwrap_or("?");
    let mut segments = import.split("::");
    if segments.next() != Some(crate_name) {
        bail!("it does not start with the crate's name `{crate_name}`");
    }
    let mut module = root;
    let mut walked = crate_name.to_owned();
    while let Some(segment) = segments.next() {
        let members = index
            .get(&module)
            .map(|module| ids(&module["inner"]["module"]["items"]))
            .unwrap_or_default();
        let found = members.into_iter().find_map(|id| {
            let item = index.get(&id)?;
            if item["visibility"] != "public" {
                return None;
            }
            let (kind, inner) = item["inner"].as_object()?.iter().next()?;
            match kind.as_str() {
                "use" if inner["name"] == segment && inner["is_glob"] != true => {
                    id_key(&inner["id"])
                }
                // A module walks on; any other item of this crate is refused below.
                _ if item["name"] == segment => Some(id),
                _ => None,
            }
        });
        let Some(target) = found else {
            bail!("`{walked}` has no public module or `pub use` named `{segment}`");
        };
        walked = format!("{walked}::{segment}");
        let local = index
            .get(&target)
            .is_some_and(|item| item["crate_id"].as_u64() == Some(0));
        if local {
            if index[&target]["inner"]["module"].is_null() {
                bail!("`{walked}` is an item of this crate, not a re-export of another crate's");
            }
            module = target;
            continue;
        }
        let Some(entry) = paths.get(&target) else {
            bail!("`{walked}` re-exports an item rustdoc does not name");
        };
        let path: Vec<&str> = entry["path"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let path = path.join("::");
        let rest: Vec<&str> = segments.collect();
        return if entry["kind"] == "module" {
            Ok(Reexport::Module {
                path,
                rest: rest.join("::"),
            })
        } else if rest.is_empty() {
            Ok(Reexport::Item(path))
        } else {
            bail!(
                "`{walked}` re-exports `{path}`, which is not a module: `{}` is not in it",
                rest.join("::")
            )
        };
    }
    bail!("`{walked}` is a module of this crate, not a re-export of another crate's")
}

/// Checks that a listed item is reachable where its bullet says, and gives the module (a crate,
/// usually) it is re-exported through, if any: the `pub use` of that module is then deliberate.
fn verify_reexport(json: &Value, item: &Listed) -> Result<Option<String>> {
    let glob = item.pattern.strip_suffix("::*");
    match (resolve_reexport(json, &item.reexport)?, glob) {
        (Reexport::Module { path, rest }, Some(_)) if rest.is_empty() => Ok(Some(path)),
        (Reexport::Module { path, rest }, None) if !rest.is_empty() => Ok(Some(path)),
        (Reexport::Item(path), None) if path == item.pattern => Ok(None),
        (Reexport::Module { path, .. }, Some(_)) => {
            bail!(
                "a crate glob is re-exported as the whole crate (`...::{path}`), not an item in it"
            )
        }
        (Reexport::Module { path, .. }, None) => {
            bail!("it names the re-export of `{path}` itself: name the item in it")
        }
        (Reexport::Item(path), _) => bail!("it re-exports `{path}`, not `{}`", item.pattern),
    }
}

/// Whether a listed pattern (a full path, or `crate::*` for every item of a crate) covers a path.
fn covers(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("::*") {
        Some(prefix) => {
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        }
        None => pattern == path,
    }
}

/// The used paths that no listed pattern covers (with where they are used), and the listed
/// items that cover no used path. A `pub use` of a whole crate (or module) is covered when a
/// listed item is re-exported through it (`through`).
fn compare<'a>(
    used: &'a BTreeMap<String, BTreeSet<String>>,
    listed: &'a [Listed],
    through: &BTreeSet<String>,
) -> (Vec<(&'a str, &'a BTreeSet<String>)>, Vec<&'a Listed>) {
    let unlisted = used
        .iter()
        .filter(|(path, _)| {
            !through.contains(path.as_str())
                && !listed.iter().any(|item| covers(&item.pattern, path))
        })
        .map(|(path, places)| (path.as_str(), places))
        .collect();
    let stale = listed
        .iter()
        .filter(|item| !used.keys().any(|path| covers(&item.pattern, path)))
        .collect();
    (unlisted, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_list_gives_each_path_with_its_import_path_and_line() {
        let readme = "# mainstay-x\n\nText.\n\n## Third-party types in the public API\n\nThe items below.\n\n- `prometheus_client::registry::Registry` (re-exported as `mainstay_x::prometheus_client::registry::Registry`): every crate registers into the caller's registry.\n- `serde_core::*`\n  (re-exported as `mainstay_x::serde`) — the configuration derives Serialize and\n  Deserialize.\n\n## MSRV\n\n- `not::Listed`: another section.\n";
        assert_eq!(
            listed_items(readme).unwrap(),
            [
                Listed {
                    pattern: "prometheus_client::registry::Registry".to_owned(),
                    reexport: "mainstay_x::prometheus_client::registry::Registry".to_owned(),
                    line: 9
                },
                Listed {
                    pattern: "serde_core::*".to_owned(),
                    reexport: "mainstay_x::serde".to_owned(),
                    line: 10
                },
            ]
        );
        let none = "## Third-party types in the public API\n\nNone.\n";
        assert_eq!(listed_items(none).unwrap(), []);
    }

    #[test]
    fn a_readme_without_the_section_or_with_a_malformed_bullet_is_refused() {
        let cases = [
            ("# x\n\n## Features\n", "no section"),
            (
                "## Third-party types in the public API\n\n## MSRV\n",
                "lists no item",
            ),
            (
                "## Third-party types in the public API\n\nNone.\n\n- `a::B` (re-exported as `x::a::B`): why\n",
                "says \"None.\" and lists",
            ),
            (
                "## Third-party types in the public API\n\n- a::B: why\n",
                "line 3: a bullet starts",
            ),
            (
                "## Third-party types in the public API\n\n- `a::B` (re-exported as `x::a::B`)\n",
                "needs its reason",
            ),
            (
                "## Third-party types in the public API\n\n- `a::B<C>` (re-exported as `x::a::B`): why\n",
                "is not a full path",
            ),
            (
                "## Third-party types in the public API\n\n- `a::B`: why\n",
                "line 3: `a::B` needs where users import it from",
            ),
            (
                "## Third-party types in the public API\n\n- `a::B` (re-exported as `x::a::B<C>`): why\n",
                "which is not a path",
            ),
        ];
        for (readme, expected) in cases {
            let error = listed_items(readme).unwrap_err().to_string();
            assert!(error.contains(expected), "{readme:?} gave {error:?}");
        }
    }

    fn listed(pattern: &str, reexport: &str, line: usize) -> Listed {
        Listed {
            pattern: pattern.to_owned(),
            reexport: reexport.to_owned(),
            line,
        }
    }

    #[test]
    fn a_glob_covers_its_crate_only_and_the_comparison_finds_unlisted_and_stale() {
        assert!(covers("serde_core::*", "serde_core::ser::Serialize"));
        assert!(covers("object_store::*", "object_store"));
        assert!(!covers("serde::*", "serde_core::ser::Serialize"));
        assert!(covers("bytes::bytes::Bytes", "bytes::bytes::Bytes"));
        assert!(!covers("bytes::bytes::Bytes", "bytes::bytes::BytesMut"));
        let used = BTreeMap::from([
            (
                "bytes::bytes::Bytes".to_owned(),
                BTreeSet::from(["x::f".to_owned()]),
            ),
            (
                "http::request::Request".to_owned(),
                BTreeSet::from(["x::g".to_owned()]),
            ),
            (
                "bytes".to_owned(),
                BTreeSet::from(["pub use bytes in x".to_owned()]),
            ),
            (
                "rand".to_owned(),
                BTreeSet::from(["pub use rand in x".to_owned()]),
            ),
        ]);
        let listed = [
            listed("bytes::bytes::Bytes", "x::bytes::Bytes", 3),
            listed("tower_layer::Layer", "x::tower::Layer", 4),
        ];
        // `bytes` is re-exported for a listed item; `rand` for none.
        let through = BTreeSet::from(["bytes".to_owned()]);
        let (unlisted, stale) = compare(&used, &listed, &through);
        assert_eq!(
            unlisted,
            [
                (
                    "http::request::Request",
                    &BTreeSet::from(["x::g".to_owned()])
                ),
                ("rand", &BTreeSet::from(["pub use rand in x".to_owned()])),
            ]
        );
        assert_eq!(stale, [&listed[1]]);
    }

    /// A hand-written fragment in the shape of format 57: a root module `x` with `pub use
    /// bytes;`, `pub use serde;`, a re-exported item, a `pub(crate) use tower;`, a struct of its
    /// own, and a public module `http` that re-exports one item of the `http` crate.
    #[test]
    fn each_listed_item_must_be_re_exported_where_its_bullet_says() {
        let json: Value = serde_json::from_str(
            r#"{
            "format_version": 57,
            "root": 0,
            "external_crates": {
                "2": { "name": "bytes" }, "3": { "name": "serde" }, "5": { "name": "tokio_util" },
                "6": { "name": "tower" }, "7": { "name": "http" }
            },
            "paths": {
                "1": { "crate_id": 0, "path": ["x", "Config"], "kind": "struct" },
                "11": { "crate_id": 2, "path": ["bytes"], "kind": "module" },
                "12": { "crate_id": 3, "path": ["serde"], "kind": "module" },
                "14": { "crate_id": 5, "path": ["tokio_util", "sync", "cancellation_token", "CancellationToken"], "kind": "struct" },
                "16": { "crate_id": 6, "path": ["tower"], "kind": "module" },
                "17": { "crate_id": 7, "path": ["http", "header", "map", "HeaderMap"], "kind": "struct" }
            },
            "index": {
                "0": { "crate_id": 0, "name": "x", "visibility": "public",
                       "inner": { "module": { "is_crate": true, "items": [1, 2, 3, 4, 5, 6] } } },
                "1": { "crate_id": 0, "name": "Config", "visibility": "public",
                       "inner": { "struct": { "kind": { "plain": { "fields": [], "has_stripped_fields": false } },
                                              "generics": { "params": [], "where_predicates": [] }, "impls": [] } } },
                "2": { "crate_id": 0, "name": null, "visibility": "public",
                       "inner": { "use": { "source": "bytes", "name": "bytes", "id": 11, "is_glob": false } } },
                "3": { "crate_id": 0, "name": null, "visibility": "public",
                       "inner": { "use": { "source": "serde", "name": "serde", "id": 12, "is_glob": false } } },
                "4": { "crate_id": 0, "name": null, "visibility": "public",
                       "inner": { "use": { "source": "tokio_util::sync::CancellationToken",
                                           "name": "CancellationToken", "id": 14, "is_glob": false } } },
                "5": { "crate_id": 0, "name": null, "visibility": "crate",
                       "inner": { "use": { "source": "tower", "name": "tower", "id": 16, "is_glob": false } } },
                "6": { "crate_id": 0, "name": "http", "visibility": "public",
                       "inner": { "module": { "is_crate": false, "items": [7] } } },
                "7": { "crate_id": 0, "name": null, "visibility": "public",
                       "inner": { "use": { "source": "http::HeaderMap", "name": "HeaderMap", "id": 17, "is_glob": false } } }
            }
        }"#,
        )
        .unwrap();
        let token = "tokio_util::sync::cancellation_token::CancellationToken";
        let accepted = [
            ("bytes::bytes::Bytes", "x::bytes::Bytes", Some("bytes")),
            ("serde_core::*", "x::serde", Some("serde")),
            (token, "x::CancellationToken", None),
            ("http::header::map::HeaderMap", "x::http::HeaderMap", None),
        ];
        for (pattern, reexport, through) in accepted {
            let item = listed(pattern, reexport, 1);
            assert_eq!(
                verify_reexport(&json, &item).unwrap().as_deref(),
                through,
                "{item:?}"
            );
        }
        let refused = [
            (
                "tower_layer::Layer",
                "x::tower::Layer",
                "`x` has no public module or `pub use` named `tower`",
            ),
            (
                "bytes::bytes::Bytes",
                "y::bytes::Bytes",
                "does not start with the crate's name `x`",
            ),
            (
                "bytes::bytes::Bytes",
                "x::bytes",
                "names the re-export of `bytes` itself",
            ),
            (
                "serde_core::*",
                "x::serde::Serialize",
                "a crate glob is re-exported as the whole crate",
            ),
            (
                "tokio_util::sync::DropGuard",
                "x::CancellationToken",
                &format!("it re-exports `{token}`, not"),
            ),
            (
                token,
                "x::CancellationToken::new",
                "which is not a module: `new` is not in it",
            ),
            (
                "a::Config",
                "x::Config",
                "`x::Config` is an item of this crate",
            ),
            (
                "http::header::map::HeaderMap",
                "x::http",
                "`x::http` is a module of this crate",
            ),
        ];
        for (pattern, reexport, expected) in refused {
            let item = listed(pattern, reexport, 1);
            let error = verify_reexport(&json, &item).unwrap_err().to_string();
            assert!(error.contains(expected), "{item:?} gave {error:?}");
        }
    }

    /// A hand-written fragment in the shape of format 57: a root module with a public function
    /// taking a third-party type, a public struct with a private and a public field, a public
    /// enum whose variant holds a third-party type, a trait impl
    /// of a third-party trait, a synthetic impl and a blanket impl (skipped), a macro-written
    /// `Unpin` impl naming the macro's private helper (skipped), and a re-export.
    #[test]
    fn the_walk_finds_third_party_paths_in_public_items_only() {
        let json: Value = serde_json::from_str(
            r#"{
            "format_version": 57,
            "root": 0,
            "external_crates": {
                "1": { "name": "std" },
                "2": { "name": "bytes" },
                "3": { "name": "serde_core" },
                "4": { "name": "mainstay_clock" },
                "5": { "name": "tokio_util" },
                "6": { "name": "hidden" },
                "7": { "name": "pin_project_lite" },
                "8": { "name": "serde_json" }
            },
            "paths": {
                "1": { "crate_id": 0, "path": ["x", "Config"], "kind": "struct" },
                "10": { "crate_id": 1, "path": ["std", "string", "String"], "kind": "struct" },
                "11": { "crate_id": 2, "path": ["bytes", "bytes", "Bytes"], "kind": "struct" },
                "12": { "crate_id": 3, "path": ["serde_core", "ser", "Serialize"], "kind": "trait" },
                "13": { "crate_id": 4, "path": ["mainstay_clock", "SharedClock"], "kind": "type_alias" },
                "14": { "crate_id": 5, "path": ["tokio_util", "sync", "CancellationToken"], "kind": "struct" },
                "15": { "crate_id": 6, "path": ["hidden", "Secret"], "kind": "struct" },
                "16": { "crate_id": 1, "path": ["core", "marker", "Send"], "kind": "trait" },
                "17": { "crate_id": 7, "path": ["pin_project_lite", "__private", "PinnedFieldsOf"], "kind": "type_alias" },
                "18": { "crate_id": 1, "path": ["core", "marker", "Unpin"], "kind": "trait" },
                "23": { "crate_id": 8, "path": ["serde_json", "error", "Error"], "kind": "struct" }
            },
            "index": {
                "0": { "crate_id": 0, "name": "x", "visibility": "public",
                       "inner": { "module": { "is_crate": true, "items": [2, 1, 3, 9, 20] } } },
                "20": { "crate_id": 0, "name": "Failure", "visibility": "public",
                        "inner": { "enum": { "generics": { "params": [], "where_predicates": [] },
                                             "variants": [21], "impls": [] } } },
                "21": { "crate_id": 0, "name": "Json", "visibility": "default",
                        "inner": { "variant": { "kind": { "tuple": [22] }, "discriminant": null } } },
                "22": { "crate_id": 0, "name": "0", "visibility": "default",
                        "inner": { "struct_field": { "resolved_path": { "path": "serde_json::Error", "id": 23, "args": null } } } },
                "2": { "crate_id": 0, "name": "decode", "visibility": "public",
                       "inner": { "function": {
                           "sig": { "inputs": [["data", { "borrowed_ref": { "type":
                               { "resolved_path": { "path": "Bytes", "id": 11, "args": null } } } }]],
                                    "output": { "resolved_path": { "path": "String", "id": 10, "args": null } } },
                           "generics": { "params": [], "where_predicates": [] } } } },
                "1": { "crate_id": 0, "name": "Config", "visibility": "public",
                       "inner": { "struct": { "kind": { "plain": { "fields": [4, 5], "has_stripped_fields": false } },
                                              "generics": { "params": [], "where_predicates": [] },
                                              "impls": [6, 7, 8, 10] } } },
                "4": { "crate_id": 0, "name": "clock", "visibility": "public",
                       "inner": { "struct_field": { "resolved_path": { "path": "SharedClock", "id": 13, "args": null } } } },
                "5": { "crate_id": 0, "name": "secret", "visibility": "default",
                       "inner": { "struct_field": { "resolved_path": { "path": "Secret", "id": 15, "args": null } } } },
                "6": { "crate_id": 0, "name": null, "visibility": "default",
                       "inner": { "impl": { "is_synthetic": false, "blanket_impl": null,
                           "trait": { "path": "Serialize", "id": 12, "args": null },
                           "for": { "resolved_path": { "path": "Config", "id": 1, "args": null } },
                           "generics": { "params": [], "where_predicates": [] }, "items": [] } } },
                "7": { "crate_id": 0, "name": null, "visibility": "default",
                       "inner": { "impl": { "is_synthetic": true, "blanket_impl": null,
                           "trait": { "path": "Secret", "id": 15, "args": null },
                           "for": { "resolved_path": { "path": "Config", "id": 1, "args": null } },
                           "generics": { "params": [], "where_predicates": [] }, "items": [] } } },
                "8": { "crate_id": 0, "name": null, "visibility": "default",
                       "inner": { "impl": { "is_synthetic": false, "blanket_impl": { "generic": "T" },
                           "trait": { "path": "Secret", "id": 15, "args": null },
                           "for": { "generic": "T" },
                           "generics": { "params": [], "where_predicates": [] }, "items": [] } } },
                "10": { "crate_id": 0, "name": null, "visibility": "default",
                       "inner": { "impl": { "is_synthetic": false, "blanket_impl": null,
                           "trait": { "path": "Unpin", "id": 18, "args": null },
                           "for": { "resolved_path": { "path": "Config", "id": 1, "args": null } },
                           "generics": { "params": [], "where_predicates": [{ "bound_predicate": {
                               "type": { "resolved_path": { "path": "PinnedFieldsOf", "id": 17, "args": null } },
                               "bounds": [{ "trait_bound": { "trait": { "path": "Unpin", "id": 18, "args": null } } }] } }] },
                           "items": [] } } },
                "3": { "crate_id": 0, "name": null, "visibility": "public",
                       "inner": { "use": { "source": "tokio_util::sync::CancellationToken",
                                           "name": "CancellationToken", "id": 14, "is_glob": false } } },
                "9": { "crate_id": 0, "name": "internal", "visibility": "crate",
                       "inner": { "function": { "sig": { "inputs": [], "output":
                           { "dyn_trait": { "traits": [{ "trait": { "path": "Secret", "id": 15, "args": null } },
                                                       { "trait": { "path": "Send", "id": 16, "args": null } }] } } },
                           "generics": { "params": [], "where_predicates": [] } } } }
            }
        }"#,
        )
        .unwrap();
        let used = third_party_uses(&json).unwrap();
        let expected = BTreeMap::from([
            (
                "bytes::bytes::Bytes".to_owned(),
                BTreeSet::from(["x::decode".to_owned()]),
            ),
            (
                "serde_core::ser::Serialize".to_owned(),
                BTreeSet::from(["impl serde_core::ser::Serialize for x::Config".to_owned()]),
            ),
            (
                "serde_json::error::Error".to_owned(),
                BTreeSet::from(["x::Failure::Json::0".to_owned()]),
            ),
            (
                "tokio_util::sync::CancellationToken".to_owned(),
                BTreeSet::from(["pub use tokio_util::sync::CancellationToken in x".to_owned()]),
            ),
        ]);
        assert_eq!(used, expected);
    }

    #[test]
    fn json_of_an_unknown_shape_is_refused_with_what_is_missing() {
        let error = third_party_uses(&serde_json::json!({ "index": {} }))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no format_version"), "{error}");
        let error = third_party_uses(&serde_json::json!({ "format_version": 99, "items": [] }))
            .unwrap_err()
            .to_string();
        assert!(error.contains("format version 99 has no index"), "{error}");
    }
}
