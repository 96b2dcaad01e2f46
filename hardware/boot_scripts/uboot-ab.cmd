# Orange Friday A/B boot script for U-Boot (Mender's variable names, so fw_setenv users and
# the agent's U-Boot backend agree). Compile it for U-Boot's distro boot:
#
#     mkimage -A arm64 -T script -C none -n "Orange Friday A/B" -d uboot-ab.cmd boot.scr
#
# and put boot.scr on the boot partition (FAT). Documented in docs/agent.md.
#
# The A/B state lives on the same FAT partition, in uboot.env: the format fw_setenv writes
# (CRC32 + NUL-separated name=value). When uboot-redund.env sits beside it the environment is
# redundant: two copies, each with a flags byte after the CRC; the valid copy with the newer
# flags wins and a write goes to the other copy, as libubootenv does, so a power cut during a
# write leaves the old state or the new one. Linux edits it with fw_setenv, fw_env.config:
#     /boot/firmware/uboot.env        0x0 0x4000
#     /boot/firmware/uboot-redund.env 0x0 0x4000
#
# Variables (the agent's U-Boot backend writes the first four; this script writes bootcount
# and, on fallback, the boot part and upgrade_available):
#   mender_boot_part / mender_boot_part_hex  partition of the slot to boot (decimal / hex)
#   upgrade_available  1 while a new slot is on trial: every boot counts in bootcount
#   bootcount          boots of the trial so far (hex, as U-Boot's setexpr writes it)
#   bootlimit          trial boots allowed (hex); past it altbootcmd falls back
#
# Every boot prints one line the tests (and a serial console reader) look for:
#   OTA-BOOT slot=B part=3 bootcount=1 upgrade_available=1
# then loads the kernel from the chosen partition; if that fails it says so and resets, which
# counts as a failed boot of a trial slot.

# ------------------------------------------------------------------ settings (edit per board)
setenv ota_part_a 2
setenv ota_part_a_hex 2
setenv ota_part_b 3
setenv ota_part_b_hex 3
setenv ota_env_file uboot.env
setenv ota_env_redund uboot-redund.env
setenv ota_env_size 0x4000
setenv ota_rootdev /dev/mmcblk0p
setenv ota_cmdline "console=serial0,115200 console=tty1 rootfstype=ext4 rootwait ro"
setenv ota_kernel /boot/Image
setenv ota_vars "mender_boot_part mender_boot_part_hex upgrade_available bootcount bootlimit"

# ------------------------------------------------------------------ where the environment is
if test -z "${devtype}"; then setenv devtype mmc; setenv devnum 0; fi
if test -z "${distro_bootpart}"; then setenv distro_bootpart 1; fi
setenv ota_dev "${devtype} ${devnum}:${distro_bootpart}"

# Scratch memory below the initrd area: two copies read and one copy written.
setexpr ota_copy1 ${ramdisk_addr_r} + 0
setexpr ota_copy2 ${ramdisk_addr_r} + 0x10000
setexpr ota_out ${ramdisk_addr_r} + 0x20004

# ------------------------------------------------------------------ the environment, read
# A single copy: CRC + data, imported as it is.
setenv ota_read_single 'setenv ota_current 1; if fatload ${ota_dev} ${ota_copy1} ${ota_env_file}; then env import -c ${ota_copy1} ${ota_env_size} ${ota_vars} || echo "OTA: ${ota_env_file} is damaged"; fi'

# One redundant copy at ${ota_at}: the file is loaded 3 bytes in, so that once its CRC moves
# up a byte (onto where the flags were), CRC + data form the single-copy layout at ${ota_at}+4,
# aligned, which env import -c reads. The flags byte is kept in ${ota_flags}.
setenv ota_load_copy 'setexpr ota_file ${ota_at} + 3; setexpr ota_flag_at ${ota_at} + 7; setexpr ota_env_at ${ota_at} + 4; mw.b ${ota_at} 0 0x4008; if fatload ${ota_dev} ${ota_file} ${ota_name}; then setexpr.b ota_flags *${ota_flag_at}; for ota_i in 3 2 1 0; do setexpr ota_from ${ota_file} + ${ota_i}; setexpr ota_to ${ota_from} + 1; cp.b ${ota_from} ${ota_to} 1; done; else setenv ota_flags 0; fi'

# Which copy is newer: the higher flags, except that 0 follows ff (libubootenv's counter).
setenv ota_pick_newer 'setenv ota_newer 1; if itest ${ota_flags2} -gt ${ota_flags1}; then setenv ota_newer 2; fi; if itest ${ota_flags1} == ff && itest ${ota_flags2} == 0; then setenv ota_newer 2; fi; if itest ${ota_flags2} == ff && itest ${ota_flags1} == 0; then setenv ota_newer 1; fi'

setenv ota_import_copy1 'setexpr ota_env_at ${ota_copy1} + 4; env import -c ${ota_env_at} ${ota_copy_size} ${ota_vars} && setenv ota_current 1'
setenv ota_import_copy2 'setexpr ota_env_at ${ota_copy2} + 4; env import -c ${ota_env_at} ${ota_copy_size} ${ota_vars} && setenv ota_current 2'

setenv ota_read_redund 'setexpr ota_copy_size ${ota_env_size} - 1; setenv ota_at ${ota_copy1}; setenv ota_name ${ota_env_file}; run ota_load_copy; setenv ota_flags1 ${ota_flags}; setenv ota_at ${ota_copy2}; setenv ota_name ${ota_env_redund}; run ota_load_copy; setenv ota_flags2 ${ota_flags}; run ota_pick_newer; setenv ota_current 0; if test ${ota_newer} = 1; then run ota_import_copy1 || run ota_import_copy2; else run ota_import_copy2 || run ota_import_copy1; fi; if test ${ota_current} = 0; then echo "OTA: both environment copies are damaged"; setenv ota_current 1; fi'

# ------------------------------------------------------------------ the environment, written
setenv ota_write_single 'env export -c -s ${ota_env_size} ${ota_out} ${ota_vars} && fatwrite ${ota_dev} ${ota_out} ${ota_env_file} ${ota_env_size}'

# Export as a single copy one byte short at ${ota_out} (aligned), move the CRC down a byte so
# the flags byte fits between CRC and data, and write the copy that is not current.
setenv ota_write_redund 'setexpr ota_copy_size ${ota_env_size} - 1; env export -c -s ${ota_copy_size} ${ota_out} ${ota_vars}; setexpr ota_file ${ota_out} - 1; for ota_i in 0 1 2 3; do setexpr ota_from ${ota_out} + ${ota_i}; setexpr ota_to ${ota_from} - 1; cp.b ${ota_from} ${ota_to} 1; done; if test ${ota_current} = 1; then setenv ota_flags ${ota_flags1}; setenv ota_name ${ota_env_redund}; else setenv ota_flags ${ota_flags2}; setenv ota_name ${ota_env_file}; fi; if itest ${ota_flags} == ff; then setenv ota_flags 0; else setexpr ota_flags ${ota_flags} + 1; fi; setexpr ota_flag_at ${ota_out} + 3; mw.b ${ota_flag_at} ${ota_flags}; fatwrite ${ota_dev} ${ota_file} ${ota_name} ${ota_env_size}'

# ------------------------------------------------------------------ slots
setenv ota_select_a 'setenv mender_boot_part ${ota_part_a}; setenv mender_boot_part_hex ${ota_part_a_hex}'
setenv ota_select_b 'setenv mender_boot_part ${ota_part_b}; setenv mender_boot_part_hex ${ota_part_b_hex}'

# The fallback U-Boot's boot counter runs once bootcount passes bootlimit: back to the other
# partition, and the trial is over.
setenv altbootcmd 'echo "OTA: trial of partition ${mender_boot_part} failed ${bootcount} times (bootlimit ${bootlimit}): falling back"; if test "${mender_boot_part}" = "${ota_part_b}"; then run ota_select_a; else run ota_select_b; fi; setenv upgrade_available 0'

setenv ota_boot_kernel 'if load ${devtype} ${devnum}:${mender_boot_part_hex} ${kernel_addr_r} ${ota_kernel}; then booti ${kernel_addr_r} - ${fdt_addr}; fi'

# ------------------------------------------------------------------ the boot
setenv ota_redund 0
if test -e ${ota_dev} ${ota_env_redund}; then
	setenv ota_redund 1
	run ota_read_redund
else
	run ota_read_single
fi

if test "${mender_boot_part}" != "${ota_part_a}" && test "${mender_boot_part}" != "${ota_part_b}"; then
	echo "OTA: no usable mender_boot_part (${mender_boot_part}): booting partition ${ota_part_a}"
	run ota_select_a
	setenv upgrade_available 0
fi
if test -z "${upgrade_available}"; then setenv upgrade_available 0; fi
if test -z "${bootcount}"; then setenv bootcount 0; fi
if test -z "${bootlimit}"; then setenv bootlimit 1; fi

if test "${upgrade_available}" = 1; then
	setexpr bootcount ${bootcount} + 1
	if itest ${bootcount} -gt ${bootlimit}; then
		run altbootcmd
	fi
	if test ${ota_redund} = 1; then run ota_write_redund; else run ota_write_single; fi
fi

setenv ota_slot A
if test "${mender_boot_part}" = "${ota_part_b}"; then setenv ota_slot B; fi
setenv bootargs "${ota_cmdline} root=${ota_rootdev}${mender_boot_part}"
echo "OTA-BOOT slot=${ota_slot} part=${mender_boot_part} bootcount=${bootcount} upgrade_available=${upgrade_available}"
echo "OTA-CMDLINE ${bootargs}"
run ota_boot_kernel
echo "OTA-BOOT failed: no kernel started from partition ${mender_boot_part}; resetting"
reset
