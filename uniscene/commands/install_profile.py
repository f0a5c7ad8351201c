"""`uniscene install-profile slurm`: copy a uniscene Snakemake profile into Snakemake's config folder.

Snakemake resolves a bare `--profile NAME` in the current folder, then the user's config folder
(`$XDG_CONFIG_HOME/snakemake`, by default `~/.config/snakemake`), then the site's
(`/etc/xdg/snakemake`); once installed, `snakemake --profile slurm all` works from any folder.

The profiles ship inside the package (`uniscene/profiles`, a link to the repository's
`profiles/` in a checkout, real files in a wheel), so the command works from a non-editable
install too. An existing profile folder is never replaced unless `--force` is given.
"""

import shutil
from importlib import resources
from pathlib import Path

from uniscene.errors import UserError
from uniscene.store import atomic_directory

HELP = "install a Snakemake profile (slurm, local) by name in your Snakemake config folder"
NEEDS_CONFIG = False  # reads no workflow config: runs from any folder


def available_profiles() -> dict[str, Path]:
    """{name: folder} of the profiles shipped with the package (each holds a config.yaml)."""
    root = Path(str(resources.files("uniscene") / "profiles"))
    return {path.name: path for path in sorted(root.iterdir()) if (path / "config.yaml").is_file()}


def snakemake_config_folder(site: bool = False) -> Path:
    """The folder where Snakemake looks up profile names: the user's, or with `site` the site's."""
    from snakemake.common import get_appdirs  # Snakemake's own lookup, so both always agree

    dirs = get_appdirs()
    return Path(dirs.site_config_dir if site else dirs.user_config_dir)


def add_arguments(parser):
    parser.add_argument("name", choices=sorted(available_profiles()), help="profile to install")
    parser.add_argument(
        "--site", action="store_true",
        help="install for every user of this machine (Snakemake's site folder, e.g. /etc/xdg/snakemake; needs write access)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--force", action="store_true", help="replace a profile folder of that name that is already there")
    where.add_argument(
        "--if-missing", action="store_true",
        help="keep a profile folder of that name that is already there and exit 0 (what `make setup` runs)",
    )


def install_profile(name: str, folder: Path, force: bool = False) -> Path:
    """Copy profile `name` to `folder/name` and return that path; an existing one only with `force`."""
    profiles = available_profiles()
    if name not in profiles:
        raise UserError(f"no uniscene profile named '{name}': choose one of {', '.join(profiles)}")
    target = folder / name
    if (target.exists() or target.is_symlink()) and not force:
        raise UserError(
            f"Snakemake profile folder {target} already exists (yours or installed earlier) and was left as it is: "
            f"use it as it is, or rerun with --force to replace it with uniscene's, or remove it first"
        )
    try:  # into a hidden sibling, then renamed: a failed copy leaves no half-written profile
        with atomic_directory(target) as temporary:
            shutil.copytree(profiles[name], temporary, dirs_exist_ok=True)
    except OSError as error:  # not writable, or a file where the folder should be
        raise UserError(
            f"cannot write the Snakemake profile folder {target} ({error.strerror}): make {folder} a folder "
            f"that you may write (for --site: run as its owner, or leave out --site)"
        ) from error
    return target


def main(args, config=None):
    folder = snakemake_config_folder(site=args.site)
    target = folder / args.name
    if args.if_missing and (target.exists() or target.is_symlink()):
        print(f"uniscene install-profile: kept the Snakemake profile {target} that is already there")
        return
    install_profile(args.name, folder, force=args.force)
    settings = "your cluster's partitions and account" if args.name == "slurm" else "its settings"
    print(
        f"uniscene install-profile: installed the {args.name} profile in {target}: run "
        f"`snakemake --profile {args.name} all` in the workflow folder; {target / 'config.yaml'} holds {settings}"
    )
