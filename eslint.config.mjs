import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules', '.marina', 'dist', 'coverage'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Workflows are replayed: they must not reach Node APIs, clocks or randomness outside Temporal's.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['node:*', 'fs', 'path', 'child_process', 'crypto', 'os'],
              message: 'workflows are deterministic: no Node APIs',
            },
            {
              group: ['@aws-sdk/*', 'ssh2', '../src/config/*', '../src/cli/*', '../src/emulator/*'],
              message: 'workflows import domain, policy and activity types only',
            },
          ],
        },
      ],
    },
  },
);
