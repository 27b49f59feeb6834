/*
 * The demo's disk commands (blkfront).  Each is a real, non-inlined
 * function (gdb can break on it); output lines start with the command's
 * name so a test can wait for them.
 */
#ifndef BLKCMDS_H
#define BLKCMDS_H

void cmd_blk_list(const char *args);
void cmd_blk_write(const char *args);
void cmd_blk_verify(const char *args);
void cmd_blk_read(const char *args);
void cmd_blk_flush(const char *args);
void cmd_blk_discard(const char *args);
void cmd_blk_open(const char *args);
void cmd_blk_close(const char *args);
void cmd_blk_opt(const char *args);
void cmd_blk_bench(const char *args);
void cmd_blk_evil(const char *args);

/* Connect the disks in device/vbd and watch for hot-plugged ones. */
void blkcmds_init(void);

#endif /* BLKCMDS_H */
