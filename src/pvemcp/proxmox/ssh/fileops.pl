# pvemcp file helper: run on a Proxmox VE node as `perl -e <this> -- OP ARGS...`.
#
# Resolves, reads and atomically writes files without following a symlink the gateway
# did not see. Paths are resolved here component by component (lstat, readlink, at most
# 40 links, as the kernel), then opened by walking the canonical path from `/`: every
# directory opened O_NOFOLLOW|O_DIRECTORY and entered with fchdir, the file itself opened
# O_NOFOLLOW and checked to be the object that was resolved (device and inode). A swap of
# any component for a symlink during the call makes it fail; it is never followed.
#
#   resolve PATH  -> canonical path, kind of PATH itself (not followed), and the size, mode,
#                    uid and gid of what the canonical path names, NUL-separated
#   read    PATH CANONICAL MAX  -> the file's bytes on stdout
#   write   PATH CANONICAL MODE EXPECT TEMP MAX  (content on stdin)
#           MODE: octal, or "keep" (the replaced file's bits but set-uid/gid and sticky;
#           0644 for a new file); EXPECT: the current content's sha256, or "absent" when
#           no file may exist
#           -> "created" or "replaced", the replaced content's sha256 (or empty) and the
#           mode set, NUL-separated
#
# Failures exit 3 with "CODE NUL MESSAGE" on stderr; CODE is one the gateway maps to an
# error (path_refused, unresolvable, path_changed, not_found, file_too_large,
# precondition_failed, file_error). Only Perl modules every PVE node has are used
# (PVE itself is written in Perl).
use strict;
use warnings;
use Errno qw(ENOENT);
use Fcntl qw(:DEFAULT :mode);

my $MAX_LINKS = 40;
my $MAX_PATH = 4096;
my $temp_made;    # the temporary file's name, in the directory held as cwd

binmode STDOUT;
binmode STDIN;
$SIG{TERM} = $SIG{INT} = $SIG{PIPE} = sub { die ["file_error", "interrupted"] };

sub fail { die [@_] }

sub kind_of {
    my ($mode) = @_;
    return S_ISREG($mode) ? "file" : S_ISDIR($mode) ? "directory"
         : S_ISLNK($mode) ? "symlink" : "other";
}

# The canonical form of an absolute PATH: every symlink resolved, the components that do
# not exist (each below an existing directory, the first one's lstat saying ENOENT)
# appended as given. Any other failure (a loop, too many links, a name too long, no
# permission, a file where a directory should be) refuses: the gateway would otherwise
# judge one path while the kernel opens another.
sub resolve {
    my ($path) = @_;
    my @todo = grep { length } split m{/}, $path;
    my @done;
    my ($links, $missing) = (0, 0);
    while (@todo) {
        my $name = shift @todo;
        next if $name eq ".";
        if ($missing) {
            fail("unresolvable", "$path leads through a directory that does not exist "
                . "and then '..'") if $name eq "..";
            push @done, $name;
            next;
        }
        if ($name eq "..") { pop @done; next }
        my $here = "/" . join("/", @done, $name);
        fail("unresolvable", "$path resolves to a path longer than $MAX_PATH bytes")
            if length($here) > $MAX_PATH;
        my @st = lstat $here;
        if (!@st) {
            fail("unresolvable", "$path cannot be resolved: examining $here failed: $!")
                unless $! == ENOENT;
            $missing = 1;
            push @done, $name;
            next;
        }
        if (S_ISLNK($st[2])) {
            fail("unresolvable", "$path cannot be resolved: more than $MAX_LINKS symlinks")
                if ++$links > $MAX_LINKS;
            my $target = readlink $here;
            fail("unresolvable", "$path cannot be resolved: reading the link $here failed: $!")
                unless defined $target;
            @done = () if $target =~ m{^/};
            unshift @todo, grep { length } split m{/}, $target;
            next;
        }
        fail("unresolvable", "$path cannot be resolved: $here is not a directory")
            if @todo && !S_ISDIR($st[2]);
        push @done, $name;
    }
    my $canonical = "/" . join("/", @done);
    fail("unresolvable", "$path resolves to a path longer than $MAX_PATH bytes")
        if length($canonical) > $MAX_PATH;
    fail("unresolvable", "$path resolves to a name with a control character")
        if $canonical =~ /[\x00-\x1f\x7f]/;
    return $canonical;
}

# Enter the directory holding CANONICAL's last component by walking from `/`, each
# component opened without following a symlink; returns that directory's handle and the
# last component's name.
sub enter_parent {
    my ($canonical) = @_;
    my @parts = grep { length } split m{/}, $canonical;
    my $name = pop @parts;
    fail("path_refused", "/ is a directory, not a file") unless defined $name;
    sysopen(my $dir, "/", O_RDONLY | O_DIRECTORY) or fail("file_error", "opening / failed: $!");
    chdir $dir or fail("file_error", "entering / failed: $!");
    my $at = "";
    for my $part (@parts) {
        $at .= "/$part";
        if (!sysopen($dir, $part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)) {
            fail("not_found", "$at does not exist") if $! == ENOENT;
            fail("path_changed", "$at is no longer a directory (a symlink or a file now): $!");
        }
        chdir $dir or fail("file_error", "entering $at failed: $!");
    }
    return ($dir, $name);
}

# The regular file NAME in the current directory, opened without following a symlink and
# without blocking on a FIFO; undef when there is none. WANT (dev, ino) pins the object.
sub open_file {
    my ($name, $shown, $want) = @_;
    my @st = lstat $name;
    if (!@st) {
        return undef if $! == ENOENT;
        fail("file_error", "examining $shown failed: $!");
    }
    my $kind = kind_of($st[2]);
    fail($kind eq "symlink" ? "path_changed" : "path_refused", "$shown is a $kind, not a file")
        if $kind ne "file";
    sysopen(my $fh, $name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
        or fail("file_error", "opening $shown failed: $!");
    my @opened = stat $fh;
    if (!S_ISREG($opened[2]) || $opened[0] != $st[0] || $opened[1] != $st[1]
        || ($want && ($opened[0] != $want->[0] || $opened[1] != $want->[1]))) {
        fail("path_changed", "$shown was replaced while it was opened");
    }
    return ($fh, \@opened);
}

sub slurp {
    my ($fh, $shown, $max) = @_;
    my $data = "";
    while (1) {
        my $got = sysread $fh, $data, 65536, length $data;
        fail("file_error", "reading $shown failed: $!") unless defined $got;
        last if $got == 0;
        fail("file_too_large", "$shown has more than the $max bytes allowed")
            if length($data) > $max;
    }
    return $data;
}

# Resolve PATH again and insist it still leads to CANONICAL (what policy judged).
sub still {
    my ($path, $canonical) = @_;
    my $now = resolve($path);
    fail("path_changed", "$path now leads to $now, not $canonical as when it was planned")
        if $now ne $canonical;
    my @st = lstat $canonical;
    return @st ? [$st[0], $st[1]] : undef;
}

sub op_resolve {
    my ($path) = @_;
    my $canonical = resolve($path);
    my @req = lstat $path;
    my @st = lstat $canonical;
    my @fields = ($canonical, @req ? kind_of($req[2]) : "");
    push @fields, @st ? ($st[7], S_IMODE($st[2]), $st[4], $st[5]) : ("") x 4;
    print join("\0", @fields);
}

sub op_read {
    my ($path, $canonical, $max) = @_;
    my $want = still($path, $canonical);
    my (undef, $name) = enter_parent($canonical);
    my ($fh, $st) = open_file($name, $canonical, $want);
    fail("not_found", "$path does not exist") unless $fh;
    fail("file_too_large", "$canonical has $st->[7] bytes, more than the $max allowed")
        if $st->[7] > $max;
    print slurp($fh, $canonical, $max);
}

sub op_write {
    my ($path, $canonical, $mode, $expect, $temp, $max) = @_;
    # Loaded here, not above: every read and resolve would pay for them (milliseconds).
    require Digest::SHA;
    require IO::Handle;
    my @req = lstat $path;
    fail("path_refused", "$path is a symlink; files tools never write through one")
        if @req && S_ISLNK($req[2]);
    my $want = still($path, $canonical);
    my ($dir, $name) = enter_parent($canonical);
    my ($fh, $st) = open_file($name, $canonical, $want);
    my $before = $fh ? Digest::SHA::sha256_hex(slurp($fh, $canonical, $max)) : "absent";
    fail("precondition_failed", "$canonical is not the content the write was planned "
        . "against; nothing was written") if $before ne $expect;
    my $data = slurp(\*STDIN, "the new content", $max);
    sysopen(my $out, $temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600)
        or fail("file_error", "creating a temporary file in the directory of $canonical "
            . "failed: $!");
    $temp_made = $temp;
    my $off = 0;
    while ($off < length $data) {
        my $put = syswrite $out, $data, length($data) - $off, $off;
        fail("file_error", "writing the temporary file failed: $!") unless defined $put;
        $off += $put;
    }
    my @mine = stat $out;
    if ($fh && ($mine[4] != $st->[4] || $mine[5] != $st->[5])) {
        my ($uid, $gid) = @$st[4, 5];
        chown $uid, $gid, $out
            or fail("file_error", "$canonical belongs to uid $uid gid $gid, which the SSH "
                . "user cannot give the new content ($!); nothing was written");
    }
    # Kept permissions lose set-uid, set-gid and sticky: new content is not the program
    # someone once made set-uid.
    my $bits = $mode ne "keep" ? oct($mode) : $fh ? S_IMODE($st->[2]) & 0777 : 0644;
    chmod $bits, $out or fail("file_error", sprintf("setting mode %04o failed: $!", $bits));
    $out->sync or fail("file_error", "flushing the temporary file failed: $!");
    close $out or fail("file_error", "closing the temporary file failed: $!");
    # What was checked above must still hold just before the switch.
    my ($again) = open_file($name, $canonical, $fh ? $st : undef);
    my $now = $again ? Digest::SHA::sha256_hex(slurp($again, $canonical, $max)) : "absent";
    fail("precondition_failed", "$canonical changed during the write; nothing was written")
        if $now ne $before;
    rename $temp, $name or fail("file_error", "renaming over $canonical failed: $!");
    $temp_made = undef;
    $dir->sync;    # the rename itself on disk; a file system that cannot is not an error
    print join("\0", $fh ? ("replaced", $before) : ("created", ""), sprintf("%04o", $bits));
}

my %ops = (resolve => [\&op_resolve, 1], read => [\&op_read, 3], write => [\&op_write, 6]);
my $op = shift @ARGV // "";
my $ok = eval {
    my $spec = $ops{$op} or fail("file_error", "unknown operation '$op'");
    fail("file_error", "$op takes $spec->[1] arguments") if @ARGV != $spec->[1];
    $spec->[0]->(@ARGV);
    1;
};
if (!$ok) {
    my $error = $@;
    unlink $temp_made if defined $temp_made;
    my ($code, $message) = ref $error eq "ARRAY" ? @$error : ("file_error", "$error");
    $message =~ s/\s+$//;
    print STDERR "$code\0$message";
    exit 3;
}
