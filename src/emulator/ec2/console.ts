/**
 * What an emulated instance prints to its console, as GetConsoleOutput returns it. EC2 posts a boot's output
 * some minutes after the boot (until then Output is empty), and a macOS AMI prints no SSH host keys of its own:
 * the block appears only when the instance's user data prints it, as Marina's does (ec2mac/console-host-keys.ts).
 */
import { KEYS_BEGIN, KEYS_END } from '../../ec2mac/console-host-keys';
import type { Ec2MacCloud, Instance } from './cloud';

export interface ConsolePost {
  /** The console text (the server base64-encodes it, as EC2 does). */
  text: string;
  /** When EC2 posted it, epoch seconds. */
  postedAt: number;
}

/**
 * The instance's posted console output, or undefined while there is none. `ownKey` is the public key of the
 * instance's real sshd (`type base64`), undefined until that sshd has started.
 */
export function consoleOf(cloud: Ec2MacCloud, i: Instance, ownKey: string | undefined): ConsolePost | undefined {
  if (i.state !== 'running' || i.sshAt === undefined) return undefined;
  const postedAt = i.sshAt + cloud.options.timings.consolePostSeconds;
  if (cloud.clock.now() < postedAt) return undefined;
  const rule = cloud.consoleRule(i);
  if (rule?.empty) return undefined;
  const printsKeys = i.userData?.includes(KEYS_BEGIN) === true;
  const key = rule?.hostKey ?? ownKey;
  // The user data runs after sshd's keys exist: no key yet means this boot has not printed yet.
  if (printsKeys && key === undefined) return undefined;
  const host = `ip-${i.privateIp.replace(/\./g, '-')}`;
  const lines = [
    `Darwin Kernel Version (emulated): ${i.instanceType} ${i.imageId}`,
    `${host} ec2-macos-init[412]: Running module [CheckNetworkIsUp] (type: networkcheck, group: 2)`,
    `${host} ec2-macos-init[412]: Running module [GetSSHKeys] (type: sshkeys, group: 4)`,
    `${host} ec2-macos-init[412]: Running module [ExecuteUserData] (type: userdata, group: 5)`,
  ];
  if (printsKeys) lines.push(KEYS_BEGIN, `${key!} root@${host}`, KEYS_END);
  lines.push(`${host} ec2-macos-init[412]: Successfully completed run of all modules`);
  return { text: `${lines.join('\r\n')}\r\n`, postedAt };
}
